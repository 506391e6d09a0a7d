"""The planner alone: desired modules, observed states, restart records, policy and ``now`` in;
commands and new records out. No runtime, no clock: every row states both."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edge_agent.planner import (
    Create,
    DesiredModule,
    ModulePlan,
    Plan,
    Policy,
    Remove,
    Restart,
    RestartRecord,
    Start,
    Stop,
    after_run,
    observed,
    plan,
    restarted_by_operator,
)
from edge_agent.restart_state import entry_of, record_of
from edge_agent.runtime.base import ModuleSpec, ModuleState
from edgefleet.manifest import ModuleStatus, RestartPolicy

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
# backoff 10, 20, 40, 80, 80 ... s; failed once 3 restarts did not help
POLICY = Policy(backoff_base=10, backoff_max=80, max_restarts=3, healthy_reset_secs=600)
T = POLICY.stop_timeout
SPEC = ModuleSpec("m", "process", command=["run"])
SPEC_V2 = replace(SPEC, version="2.0")


def ago(secs: float) -> datetime:
    return NOW - timedelta(seconds=secs)


def later(secs: float) -> datetime:
    return NOW + timedelta(seconds=secs)


def exited(code: int, secs_ago: float, spec: ModuleSpec = SPEC) -> ModuleState:
    return ModuleState(
        "m",
        running=False,
        spec_hash=spec.spec_hash,
        exit_code=code,
        started_at=ago(secs_ago + 1),
        finished_at=ago(secs_ago),
        image_hash="sha256:m",
    )


def running(health: str | None = None, spec: ModuleSpec = SPEC) -> ModuleState:
    return ModuleState(
        "m",
        running=True,
        spec_hash=spec.spec_hash,
        started_at=ago(3600),
        health=health,
        image_hash="sha256:m",
    )


def created(spec: ModuleSpec = SPEC) -> ModuleState:
    """Created, never started."""
    return ModuleState("m", running=False, spec_hash=spec.spec_hash, image_hash="sha256:m")


def plan_one(
    state: ModuleState | None,
    record: RestartRecord | None = None,
    restart_policy: RestartPolicy = "always",
    status: ModuleStatus = "running",
    spec: ModuleSpec = SPEC,
    policy: Policy = POLICY,
) -> ModulePlan:
    desired = {"m": DesiredModule(spec, status, restart_policy)}
    states = {"m": state} if state is not None else {}
    records = {"m": record} if record is not None else {}
    return plan(desired, {"process": states}, records, policy, NOW).module("m")


def fields(rec: RestartRecord, *names: str) -> dict[str, Any]:
    return {n: getattr(rec, n) for n in names}


# ---------------------------------------------------------------------- restart policies
GAVE_UP_EXIT = "exit 3; gave up after 3 restarts"
GAVE_UP_SICK = "unhealthy; gave up after 3 restarts"

# condition: exit<code> (exited that many seconds ago: elapsed) or "unhealthy" (running, last
# restart elapsed seconds ago, None: never restarted)
RESTART_TABLE = [
    # policy, condition, count, elapsed, restart?, status, count after, description, backoff_until
    ("never", "exit0", 0, 100, False, "stopped", 0, "exited with code 0", None),
    ("never", "exit3", 0, 100, False, "failed", 0, "exited with code 3", None),
    ("never", "exit3", 2, 100, False, "failed", 2, "exited with code 3", None),
    ("never", "unhealthy", 0, None, False, "unhealthy", 0, "", None),
    ("on-failure", "exit0", 0, 100, False, "stopped", 0, "exited with code 0", None),
    ("on-failure", "exit3", 0, 5, False, "backoff", 0, "exit 3; restart in 10s", later(5)),
    ("on-failure", "exit3", 0, 10, True, "unknown", 1, "", None),
    ("on-failure", "exit3", 1, 15, False, "backoff", 1, "exit 3; restart in 20s", later(5)),
    ("on-failure", "exit3", 1, 20, True, "unknown", 2, "", None),
    ("on-failure", "exit3", 3, 1000, False, "failed", 3, GAVE_UP_EXIT, None),
    ("on-failure", "unhealthy", 0, None, False, "unhealthy", 0, "", None),
    ("on-unhealthy", "exit0", 0, 100, False, "stopped", 0, "exited with code 0", None),
    ("on-unhealthy", "exit3", 2, 39, False, "backoff", 2, "exit 3; restart in 40s", later(1)),
    ("on-unhealthy", "exit3", 2, 40, True, "unknown", 3, "", None),
    ("on-unhealthy", "unhealthy", 0, None, True, "unhealthy", 1, "", None),
    ("on-unhealthy", "unhealthy", 0, 5, False, "backoff", 0, "unhealthy; restart in 10s", later(5)),
    ("on-unhealthy", "unhealthy", 1, 20, True, "unhealthy", 2, "", None),
    ("on-unhealthy", "unhealthy", 3, 1000, False, "failed", 3, GAVE_UP_SICK, None),
    ("always", "exit0", 0, 3, False, "backoff", 0, "exit 0; restart in 10s", later(7)),
    ("always", "exit0", 0, 100, True, "unknown", 1, "", None),
    ("always", "exit3", 2, 100, True, "unknown", 3, "", None),
    ("always", "exit3", 3, 100, False, "failed", 3, GAVE_UP_EXIT, None),
    ("always", "unhealthy", 1, 25, True, "unhealthy", 2, "", None),
    ("always", "unhealthy", 1, 19, False, "backoff", 1, "unhealthy; restart in 20s", later(1)),
]  # fmt: skip


@pytest.mark.parametrize(
    "policy, condition, count, elapsed, restarts, status, count_after, description, until",
    RESTART_TABLE,
)
def test_restart_policy(
    policy: RestartPolicy,
    condition: str,
    count: int,
    elapsed: float | None,
    restarts: bool,
    status: str,
    count_after: int,
    description: str,
    until: datetime | None,
) -> None:
    if condition == "unhealthy":
        state = running("unhealthy")
        last = ago(elapsed) if elapsed is not None else None
    else:
        assert elapsed is not None
        state = exited(int(condition.removeprefix("exit")), elapsed)
        last = ago(elapsed + 2) if count else None  # restarted just before that run
    before = RestartRecord(restart_count=count, last_restart=last, spec_hash=SPEC.spec_hash)

    step = plan_one(state, before, restart_policy=policy)

    assert step.commands == ((Restart("m", "process", T),) if restarts else ())
    rec = step.record
    assert rec.status == status
    assert rec.restart_count == count_after
    assert rec.description == description
    assert rec.backoff_until == until
    assert rec.last_restart == (NOW if restarts else last)
    assert rec.exit_code == state.exit_code and rec.finished_at == state.finished_at
    assert before.restart_count == count  # records are values: the input is untouched
    if restarts:  # a restart that fails keeps the count and says why
        assert step.if_failed == (
            replace(rec, restart_count=count, last_restart=last, status="failed"),
        )


@pytest.mark.parametrize(
    "n, delay",
    [(0, 10.0), (1, 20.0), (2, 40.0), (3, 80.0), (4, 80.0), (9, 80.0), (100, 80.0)],
)
def test_backoff_doubles_up_to_its_ceiling(n: int, delay: float) -> None:
    policy = Policy(backoff_base=10, backoff_max=80, max_restarts=1000)
    assert policy.backoff(n) == delay
    before = RestartRecord(restart_count=n, spec_hash=SPEC.spec_hash)
    waiting = plan_one(exited(1, delay - 1), before, policy=policy)
    assert waiting.commands == ()
    assert fields(waiting.record, "status", "description", "backoff_until", "restart_count") == {
        "status": "backoff",
        "description": f"exit 1; restart in {delay:g}s",
        "backoff_until": later(1),
        "restart_count": n,
    }
    due = plan_one(exited(1, delay), before, policy=policy)
    assert due.commands == (Restart("m", "process", T),)
    assert fields(due.record, "restart_count", "last_restart", "backoff_until") == {
        "restart_count": n + 1,
        "last_restart": NOW,
        "backoff_until": None,
    }


@pytest.mark.parametrize(
    "max_restarts, count, commands, status",
    [
        (3, 2, (Restart("m", "process", T),), "unknown"),
        (3, 3, (), "failed"),
        (3, 7, (), "failed"),
        (0, 0, (), "failed"),
    ],
)
def test_failed_after_max_restarts(
    max_restarts: int, count: int, commands: tuple[Restart, ...], status: str
) -> None:
    policy = replace(POLICY, max_restarts=max_restarts)
    step = plan_one(exited(2, 1000), RestartRecord(restart_count=count), policy=policy)
    assert step.commands == commands
    assert step.record.status == status
    if status == "failed":
        assert step.record.description == f"exit 2; gave up after {count} restarts"
        assert step.record.restart_count == count


# ---------------------------------------------------------------------- healthy reset
@pytest.mark.parametrize(
    "state, healthy_since, count_after, healthy_after, status",
    [
        (running(), None, 2, NOW, "running"),  # the timer starts
        (running("healthy"), ago(599), 2, ago(599), "running"),
        (running(), ago(600), 0, ago(600), "running"),  # healthy_reset_secs of running
        (running("healthy"), ago(5000), 0, ago(5000), "running"),
        (running("starting"), ago(600), 0, ago(600), "running"),
        (running("unhealthy"), ago(5000), 2, None, "unhealthy"),  # never: no restart, no reset
        (exited(0, 1), ago(5000), 2, None, "stopped"),
    ],
)
def test_healthy_reset_timer(
    state: ModuleState,
    healthy_since: datetime | None,
    count_after: int,
    healthy_after: datetime | None,
    status: str,
) -> None:
    before = RestartRecord(restart_count=2, healthy_since=healthy_since, status="running")
    step = plan_one(state, before, restart_policy="never")
    assert step.commands == ()
    assert fields(step.record, "restart_count", "healthy_since", "status") == {
        "restart_count": count_after,
        "healthy_since": healthy_after,
        "status": status,
    }


def test_an_unhealthy_restart_stops_the_reset_timer() -> None:
    """A module that keeps turning unhealthy reaches ``failed``: its restarts never count as
    healthy running, however long ago it was first healthy."""
    record = RestartRecord(restart_count=0, healthy_since=ago(5000), status="running")
    for count in range(POLICY.max_restarts):
        step = plan_one(running("unhealthy"), record, restart_policy="on-unhealthy")
        assert step.commands == (Restart("m", "process", T),)
        assert (step.record.restart_count, step.record.healthy_since) == (count + 1, None)
        record = replace(step.record, last_restart=ago(1000))  # its backoff has passed
        healthy = plan_one(running("healthy"), record, restart_policy="on-unhealthy")
        assert healthy.record.restart_count == count + 1  # timer starts now, no reset
        assert healthy.record.healthy_since == NOW
    step = plan_one(running("unhealthy"), record, restart_policy="on-unhealthy")
    assert step.commands == ()
    assert step.record.status == "failed"


# ---------------------------------------------------------------------- desired status
@pytest.mark.parametrize(
    "state, commands, status, description",
    [
        (running(), (Stop("m", "process", T),), "stopped", "stopped by deployment"),
        (exited(3, 1), (), "stopped", "stopped by deployment"),
        (created(), (), "stopped", "stopped by deployment"),
        # not there yet: created, not started (stopped from the next pass on)
        (None, (Create("m", "process", SPEC, {}, start=False),), "unknown", ""),
    ],
)
def test_desired_stopped(
    state: ModuleState | None, commands: tuple[Any, ...], status: str, description: str
) -> None:
    step = plan_one(state, RestartRecord(restart_count=1), status="stopped")
    assert step.commands == commands
    assert fields(step.record, "status", "description", "restart_count") == {
        "status": status,
        "description": description,
        "restart_count": 1,
    }
    if state is not None and state.running:
        assert step.if_failed[0].status == "failed"


def test_created_but_never_started_is_started() -> None:
    step = plan_one(created(), RestartRecord(status="unknown"))
    assert step.commands == (Start("m", "process"),)
    assert step.record.restart_count == 0 and step.record.deployed == SPEC


# ---------------------------------------------------------------------- spec changes, removal
OLD = RestartRecord(restart_count=3, status="failed", exit_code=1, spec_hash=SPEC.spec_hash)


@pytest.mark.parametrize(
    "state, record, commands",
    [
        # running v1, v2 desired: removed and created afresh
        (
            running(spec=SPEC),
            OLD,
            (Remove("m", "process", T), Create("m", "process", SPEC_V2, {}, start=True)),
        ),
        (
            exited(1, 5, spec=SPEC),
            OLD,
            (Remove("m", "process", T), Create("m", "process", SPEC_V2, {}, start=True)),
        ),
        # saved record of v1, module gone (process modules die with the agent)
        (None, OLD, (Create("m", "process", SPEC_V2, {}, start=True),)),
    ],
)
def test_spec_change_recreates_with_a_fresh_record(
    state: ModuleState | None, record: RestartRecord, commands: tuple[Any, ...]
) -> None:
    step = plan_one(state, record, spec=SPEC_V2)
    assert step.commands == commands
    assert step.record == RestartRecord(spec_hash=SPEC_V2.spec_hash, deployed=SPEC_V2)
    if state is not None:  # the old module could not be removed: it keeps its record
        assert step.if_failed[0] == replace(OLD, status="failed", description="")


def test_env_change_recreates() -> None:
    spec = replace(SPEC, env={"A": "2"})
    step = plan_one(running(spec=replace(SPEC, env={"A": "1"})), spec=spec)
    assert step.commands == (Remove("m", "process", T), Create("m", "process", spec, {}, True))


@pytest.mark.parametrize(
    "observed, removals, m_commands",
    [
        (
            {"process": {"gone": running()}},
            (Remove("gone", "process", T),),
            (Create("m", "process", SPEC, {}, True),),
        ),
        (
            {"process": {"m": running()}, "docker": {"m": running(), "x": created()}},
            (Remove("m", "docker", T), Remove("x", "docker", T)),
            (),
        ),
        # the module changed its type: removed from the old runtime, created on the new
        (
            {"process": {}, "docker": {"m": running()}},
            (Remove("m", "docker", T),),
            (Create("m", "process", SPEC, {}, True),),
        ),
    ],
)
def test_modules_no_longer_desired_are_removed_first(
    observed: dict[str, dict[str, ModuleState]],
    removals: tuple[Remove, ...],
    m_commands: tuple[Any, ...],
) -> None:
    records = {"gone": RestartRecord(restart_count=5), "m": RestartRecord()}
    out = plan({"m": DesiredModule(SPEC)}, observed, records, POLICY, NOW)
    assert out.removals == removals
    assert out.commands == removals + m_commands
    assert out.stages[0].order is None and out.stages[0].commands == removals
    assert set(out.records) == {"m"}  # no record for what is no longer desired


def test_no_runtime_for_the_module_type() -> None:
    out = plan({"m": DesiredModule(SPEC)}, {"docker": {}}, {}, POLICY, NOW)
    assert out.commands == ()
    assert fields(out.records["m"], "status", "description") == {
        "status": "failed",
        "description": "no process runtime on this device",
    }


# ---------------------------------------------------------------------- startup order
def desired_in_orders(**orders: int) -> dict[str, DesiredModule]:
    return {
        n: DesiredModule(ModuleSpec(n, "process", command=["run"]), startup_order=o)
        for n, o in orders.items()
    }


@pytest.mark.parametrize(
    "orders, running_now, stages",
    [
        # nothing runs yet: lower startupOrder first, equal orders together
        ({"a": 2, "b": 0, "c": 0, "d": 1}, set(), [(0, ["b", "c"]), (1, ["d"]), (2, ["a"])]),
        # the earlier groups run already: only the later group has work
        ({"a": 2, "b": 0, "c": 0, "d": 1}, {"b", "c", "d"}, [(2, ["a"])]),
        ({"a": 1, "b": 0}, {"a"}, [(0, ["b"])]),
        ({"a": 5, "b": 5}, set(), [(5, ["a", "b"])]),
    ],
)
def test_startup_order_stages(
    orders: dict[str, int], running_now: set[str], stages: list[tuple[int, list[str]]]
) -> None:
    desired = desired_in_orders(**orders)
    states = {
        n: replace(running(spec=desired[n].spec), name=n) for n in running_now if n in desired
    }
    out = plan(desired, {"process": states}, {}, POLICY, NOW)
    assert [(s.order, [c.module for c in s.commands]) for s in out.stages] == stages
    assert all(isinstance(c, Create) and c.start for c in out.commands)


def test_empty_plan() -> None:
    assert Plan().commands == () and Plan().stages == () and Plan().records == {}


# ---------------------------------------------------------------------- create failures
@pytest.mark.parametrize(
    "failures, backoff_until, commands, status, fail_until",
    [
        (0, None, (Create("m", "process", SPEC, {}, True),), "unknown", later(10)),
        (1, later(5), (), "backoff", None),  # still waiting out the first failure
        (1, NOW, (Create("m", "process", SPEC, {}, True),), "unknown", later(20)),
        (2, ago(1), (Create("m", "process", SPEC, {}, True),), "unknown", later(40)),
        (6, ago(1), (Create("m", "process", SPEC, {}, True),), "unknown", later(80)),  # ceiling
        (0, later(5), (Create("m", "process", SPEC, {}, True),), "unknown", later(10)),
    ],
)
def test_create_failure_is_retried_with_backoff(
    failures: int,
    backoff_until: datetime | None,
    commands: tuple[Any, ...],
    status: str,
    fail_until: datetime | None,
) -> None:
    before = RestartRecord(
        failures=failures,
        backoff_until=backoff_until,
        description="pull x failed" if failures else "",
        status="failed" if failures else "unknown",
        spec_hash=SPEC.spec_hash,
    )
    step = plan_one(None, before)
    assert step.commands == commands
    if not commands:
        assert fields(step.record, "status", "description", "failures", "backoff_until") == {
            "status": status,
            "description": "pull x failed",
            "failures": failures,
            "backoff_until": backoff_until,
        }
        return
    # created: the failure streak ends
    assert fields(step.record, "failures", "backoff_until", "description", "deployed") == {
        "failures": 0,
        "backoff_until": None,
        "description": "",
        "deployed": SPEC,
    }
    # the pull or create fails: one more failure, a longer wait, the error reported
    failed = after_run(step, 0, "pull x failed: denied", None)
    assert fields(failed, "status", "description", "failures", "backoff_until") == {
        "status": "failed",
        "description": "pull x failed: denied",
        "failures": failures + 1,
        "backoff_until": fail_until,
    }
    # the next pass before the backoff ended waits; after it, it tries again
    assert plan_one(None, replace(failed)).commands == ()
    retry_at = fail_until - NOW if fail_until else timedelta(0)
    again = plan({"m": DesiredModule(SPEC)}, {"process": {}}, {"m": failed}, POLICY, NOW + retry_at)
    assert again.commands == commands


def test_registry_credentials_reach_the_create_command() -> None:
    from edgefleet.manifest import RegistryCredential

    creds = {"reg": RegistryCredential(address="r:5000", username="u", password="p")}
    out = plan({"m": DesiredModule(SPEC)}, {"process": {}}, {}, POLICY, NOW, creds)
    assert out.commands == (Create("m", "process", SPEC, creds, True),)


# ---------------------------------------------------------------------- after an agent restart
@pytest.mark.parametrize(
    "restart_policy, count, exited_ago, commands, status, count_after",
    [
        ("on-failure", 1, 5, (Create("m", "process", SPEC, {}, False),), "backoff", 1),
        (
            "on-failure",
            1,
            25,
            (Create("m", "process", SPEC, {}, False), Restart("m", "process", T)),
            "failed",  # the saved status until the new run is observed
            2,
        ),
        ("on-failure", 3, 1000, (Create("m", "process", SPEC, {}, False),), "failed", 3),
        ("never", 0, 1000, (Create("m", "process", SPEC, {}, False),), "failed", 0),
    ],
)
def test_module_that_exited_before_the_agent_restarted(
    restart_policy: RestartPolicy,
    count: int,
    exited_ago: float,
    commands: tuple[Any, ...],
    status: str,
    count_after: int,
) -> None:
    saved = RestartRecord(
        restart_count=count,
        status="failed",
        exit_code=3,
        finished_at=ago(exited_ago),
        spec_hash=SPEC.spec_hash,
        resumed=True,
    )
    step = plan_one(None, saved, restart_policy=restart_policy)
    assert step.commands == commands
    assert step.record.status == status and step.record.restart_count == count_after
    assert step.record.resumed  # until a run of it is observed
    if len(commands) == 2:  # created, then the restart failed: created counts, the restart not
        assert fields(step.if_failed[1], "restart_count", "failures", "deployed") == {
            "restart_count": count,
            "failures": 0,
            "deployed": SPEC,
        }


# ---------------------------------------------------------------------- after the commands
def test_after_run_adds_the_observation_or_the_failure() -> None:
    step = plan_one(exited(3, 100), RestartRecord(restart_count=1, status="backoff"))
    assert step.commands == (Restart("m", "process", T),)
    now_running = replace(running(), started_at=later(1))
    ok = after_run(step, None, "", now_running)
    assert fields(ok, "status", "running", "exit_code", "started_at", "restart_count") == {
        "status": "running",
        "running": True,
        "exit_code": None,
        "started_at": later(1),
        "restart_count": 2,
    }
    bad = after_run(step, 0, "cannot start run: no such file", None)
    assert fields(bad, "status", "description", "restart_count") == {
        "status": "failed",
        "description": "cannot start run: no such file",
        "restart_count": 1,
    }


def test_observed_keeps_earlier_runs_of_a_module_never_started_here() -> None:
    rec = RestartRecord(exit_code=3, finished_at=ago(9), resumed=True)
    assert observed(rec, created()) == replace(rec, image_hash="sha256:m")
    assert observed(rec, None) == rec


def test_operator_restart_revives_a_failed_module() -> None:
    rec = RestartRecord(restart_count=3, status="failed", backoff_until=later(9))
    assert fields(
        restarted_by_operator(rec, NOW), "restart_count", "last_restart", "backoff_until"
    ) == {"restart_count": 0, "last_restart": NOW, "backoff_until": None}


# ---------------------------------------------------------------------- report, saved form
def test_reported_uses_iot_edge_names_and_utc_text() -> None:
    rec = RestartRecord(
        restart_count=2,
        status="backoff",
        description="exit 3; restart in 20s",
        exit_code=3,
        started_at=ago(10),
        finished_at=ago(5),
        last_restart=ago(11),
    )
    assert rec.reported() == {
        "runtimeStatus": "backoff",
        "restartCount": 2,
        "exitCode": 3,
        "statusDescription": "exit 3; restart in 20s",
        "lastStartTimeUtc": "2026-01-02T03:03:55Z",
        "lastExitTimeUtc": "2026-01-02T03:04:00Z",
        "lastRestartTimeUtc": "2026-01-02T03:03:54Z",
    }
    assert RestartRecord().reported() == {"runtimeStatus": "unknown", "restartCount": 0}


def test_saved_form_round_trip_and_clamps() -> None:
    rec = RestartRecord(
        restart_count=2,
        last_restart=ago(30),
        status="backoff",
        failures=1,
        backoff_until=later(5),
        exit_code=3,
        started_at=ago(31),
        finished_at=ago(20),
        image_hash="sha256:m",
        spec_hash="abc",
    )
    entry = entry_of(rec)
    assert entry["lastRestartTimeUtc"] == "2026-01-02T03:03:35Z"
    assert record_of(entry, 80, NOW) == replace(rec, resumed=True)
    # times from a clock that went back are taken as now; a backoff is never longer than max
    ahead = {
        **entry,
        "lastExitTimeUtc": "2027-01-01T00:00:00Z",
        "backoffUntilUtc": "2030-01-01T00:00:00+00:00",  # the old saved form is read too
    }
    back = record_of(ahead, 80, NOW)
    assert back.finished_at == NOW and back.backoff_until == later(80)
    with pytest.raises(ValueError):
        record_of({"restartCount": "many"}, 80, NOW)
