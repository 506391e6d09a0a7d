"""The rollout state machine alone: spec, target, observations and ``now`` in; a new state out.
No database, no clock: every row states the times."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import pytest

from cloud_hub.deployments.rollout import (
    DeviceProgress,
    Observation,
    RolloutSpec,
    RolloutSpecError,
    RolloutState,
    abort,
    advance,
    batch_sizes,
    parse_rollout,
    pause,
    resume,
    rollout_device_sets,
    start,
)

STAGED = parse_rollout({"batches": ["1", "10%", "50%", "100%"]})
FLEET = [f"dev-{n:02}" for n in range(1, 21)]  # 20 devices: batch sizes 1, 2, 10, 20


def spec(**fields: Any) -> RolloutSpec:
    return parse_rollout({"batches": ["100%"], **fields})


def ok(restarts: int = 0, **modules: str) -> Observation:
    """Code 200 and module ``app`` (plus ``modules``) with the given runtime statuses."""
    statuses = {"app": "running", **modules}
    return Observation(200, {name: (status, restarts) for name, status in statuses.items()})


def crashing(status: str = "backoff") -> Observation:
    """Code 200, module ``app`` running and module ``crashy`` in ``status``."""
    return Observation(200, {"app": ("running", 0), "crashy": (status, 5)})


def all_ok(state: RolloutState) -> dict[str, Observation]:
    return dict.fromkeys(state.active(), ok())


def ranked(devices: Sequence[str]) -> list[str]:
    return sorted(devices, key=lambda d: hashlib.sha256(d.encode()).hexdigest())


# ---------------------------------------------------------------------- parse_rollout
@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"batches": ["1", "10%", "50%", "100%"]}, RolloutSpec(("1", "10%", "50%", "100%"))),
        (
            {
                "batches": ["1", "10%", "50%", "100%"],
                "healthTimeoutSecs": 300,
                "minHealthySecs": 30.5,
                "abort": {"failedPercent": 25, "minDevices": 5},
                "onAbort": "halt",
            },
            RolloutSpec(("1", "10%", "50%", "100%"), 300.0, 30.5, 25.0, 5, "halt"),
        ),
        # an implicit "100%" ends every list that does not end with it
        ({"batches": ["1", "10%"]}, RolloutSpec(("1", "10%", "100%"))),
        ({"batches": ["5"]}, RolloutSpec(("5", "100%"))),
        ({"batches": ["100%"]}, RolloutSpec(("100%",))),
        ({"batches": ["50%", "100.0%"]}, RolloutSpec(("50%", "100.0%"))),
        ({"batches": ["100%", "100%"]}, RolloutSpec(("100%", "100%"))),
        # counts and percentages are checked each among their own kind
        (
            {"batches": ["10", "5%", "20", "12.5%"]},
            RolloutSpec(("10", "5%", "20", "12.5%", "100%")),
        ),
        ({"batches": ["2", "2"]}, RolloutSpec(("2", "2", "100%"))),
        ({"batches": ["100%"], "minHealthySecs": 0}, RolloutSpec(("100%",), min_healthy_secs=0)),
        (
            {"batches": ["100%"], "abort": {"failedPercent": 0}},
            RolloutSpec(("100%",), failed_percent=0),
        ),
        (
            {"batches": ["100%"], "abort": {"failedPercent": 100, "minDevices": 1}},
            RolloutSpec(("100%",), failed_percent=100, min_devices=1),
        ),
        ({"batches": ["100%"], "abort": {}}, RolloutSpec(("100%",))),
    ],
)
def test_parse_valid(obj: dict[str, Any], expected: RolloutSpec) -> None:
    parsed = parse_rollout(obj)
    assert parsed == expected
    assert parse_rollout(parsed.to_json()) == parsed


def test_defaults() -> None:
    parsed = parse_rollout({"batches": ["1", "100%"]})
    assert parsed.health_timeout_secs == 600
    assert parsed.min_healthy_secs == 60
    assert parsed.failed_percent == 10
    assert parsed.min_devices == 3
    assert parsed.on_abort == "rollback"


def test_to_json_is_the_documented_form() -> None:
    doc = {
        "batches": ["1", "10%", "50%", "100%"],
        "healthTimeoutSecs": 600,
        "minHealthySecs": 60,
        "abort": {"failedPercent": 10, "minDevices": 3},
        "onAbort": "rollback",
    }
    assert parse_rollout(doc).to_json() == doc
    assert parse_rollout({"batches": ["1", "10%", "50%", "100%"]}).to_json() == doc
    assert spec(minHealthySecs=2.5).to_json()["minHealthySecs"] == 2.5


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        ([], "rollout"),
        (None, "rollout"),
        ({}, "rollout.batches"),
        ({"batches": "1"}, "rollout.batches"),
        ({"batches": []}, "rollout.batches"),
        ({"batches": ["0"]}, "rollout.batches[0]"),
        ({"batches": ["-1"]}, "rollout.batches[0]"),
        ({"batches": ["1.5"]}, "rollout.batches[0]"),
        ({"batches": [" 10%"]}, "rollout.batches[0]"),
        ({"batches": ["10 %"]}, "rollout.batches[0]"),
        ({"batches": ["%"]}, "rollout.batches[0]"),
        ({"batches": ["101%"]}, "rollout.batches[0]"),
        ({"batches": ["1", 5]}, "rollout.batches[1]"),
        ({"batches": ["1", None]}, "rollout.batches[1]"),
        ({"batches": ["1", "0%"]}, "rollout.batches[1]"),
        ({"batches": ["1", "10%", "5%"]}, "rollout.batches[2]"),
        ({"batches": ["10", "50%", "5"]}, "rollout.batches[2]"),
        ({"batches": ["100%"], "healthTimeoutSecs": 0}, "rollout.healthTimeoutSecs"),
        ({"batches": ["100%"], "healthTimeoutSecs": -5}, "rollout.healthTimeoutSecs"),
        ({"batches": ["100%"], "healthTimeoutSecs": "600"}, "rollout.healthTimeoutSecs"),
        ({"batches": ["100%"], "healthTimeoutSecs": True}, "rollout.healthTimeoutSecs"),
        ({"batches": ["100%"], "healthTimeoutSecs": math.inf}, "rollout.healthTimeoutSecs"),
        ({"batches": ["100%"], "healthTimeoutSecs": math.nan}, "rollout.healthTimeoutSecs"),
        ({"batches": ["100%"], "minHealthySecs": -1}, "rollout.minHealthySecs"),
        ({"batches": ["100%"], "minHealthySecs": None}, "rollout.minHealthySecs"),
        ({"batches": ["100%"], "minHealthySecs": 600}, "rollout.minHealthySecs"),
        (
            {"batches": ["100%"], "healthTimeoutSecs": 30, "minHealthySecs": 45},
            "rollout.minHealthySecs",
        ),
        ({"batches": ["100%"], "abort": "rollback"}, "rollout.abort"),
        ({"batches": ["100%"], "abort": {"failedPercent": 101}}, "rollout.abort.failedPercent"),
        ({"batches": ["100%"], "abort": {"failedPercent": -1}}, "rollout.abort.failedPercent"),
        ({"batches": ["100%"], "abort": {"failedPercent": "10%"}}, "rollout.abort.failedPercent"),
        ({"batches": ["100%"], "abort": {"minDevices": 0}}, "rollout.abort.minDevices"),
        ({"batches": ["100%"], "abort": {"minDevices": 2.0}}, "rollout.abort.minDevices"),
        ({"batches": ["100%"], "abort": {"minDevices": True}}, "rollout.abort.minDevices"),
        ({"batches": ["100%"], "abort": {"minDevice": 3}}, "rollout.abort.minDevice"),
        ({"batches": ["100%"], "onAbort": "stop"}, "rollout.onAbort"),
        ({"batches": ["100%"], "onAbort": None}, "rollout.onAbort"),
        ({"batches": ["100%"], "healthTimeout": 600}, "rollout.healthTimeout"),
    ],
)
def test_parse_invalid_names_the_path(obj: Any, path: str) -> None:
    with pytest.raises(RolloutSpecError) as caught:
        parse_rollout(obj)
    assert caught.value.path == path
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == f"{path}: {caught.value.message}"


def test_parse_path_prefix() -> None:
    with pytest.raises(RolloutSpecError) as caught:
        parse_rollout({"batches": ["1", "x"]}, path="content.rollout")
    assert caught.value.path == "content.rollout.batches[1]"


# ---------------------------------------------------------------------- batch_sizes
@pytest.mark.parametrize(
    ("batches", "count", "expected"),
    [
        (["1"], 10, (1, 10)),
        (["10%"], 7, (1, 7)),
        (["10%"], 10, (1, 10)),
        (["10%"], 11, (2, 11)),
        (["50%"], 1, (1, 1)),
        (["100%"], 0, (0,)),
        (["1", "10%", "50%", "100%"], 0, (0, 0, 0, 0)),
        (["1", "10%", "50%", "100%"], 1, (1, 1, 1, 1)),
        (["1", "10%", "50%", "100%"], 20, (1, 2, 10, 20)),
        (["1", "10%", "50%", "100%"], 1000, (1, 100, 500, 1000)),
        (["5", "10%", "100%"], 20, (5, 5, 20)),  # a smaller batch counts as the one before
        (["25"], 10, (10, 10)),
        (["33.3%"], 10, (4, 10)),
        (["33.3%"], 1000, (333, 1000)),
        (["0.1%"], 3, (1, 3)),
    ],
)
def test_batch_sizes(batches: list[str], count: int, expected: tuple[int, ...]) -> None:
    parsed = parse_rollout({"batches": batches})
    sizes = batch_sizes(parsed, count)
    assert sizes == expected
    assert len(sizes) == len(parsed.batches)


# ---------------------------------------------------------------------- start
def test_start_orders_by_sha256_and_activates_the_first_batch() -> None:
    state = start(STAGED, reversed(FLEET), now=100.0)
    assert state.order == tuple(ranked(FLEET))
    assert state.sizes == (1, 2, 10, 20)
    assert (state.state, state.batch, state.reason) == ("inProgress", 0, "")
    first = state.order[0]
    assert state.active() == {first}
    assert state.devices[first] == DeviceProgress(0, 100.0)


def test_start_is_deterministic() -> None:
    assert start(STAGED, FLEET, 5.0) == start(STAGED, ranked(FLEET)[::-1] + FLEET[:3], 5.0)


# ---------------------------------------------------------------------- device health
# One device, never aborting, so each row shows its outcome alone.
WATCH = spec(abort={"failedPercent": 100})
Step = tuple[float, Observation | None]


@pytest.mark.parametrize(
    ("steps", "outcome", "healthy_since", "reason"),
    [
        ([(10, ok())], "pending", 10, ""),
        ([(10, ok()), (69.9, ok())], "pending", 10, ""),
        ([(10, ok()), (70, ok())], "healthy", 10, ""),
        ([(10, ok()), (40, ok()), (70, ok())], "healthy", 10, ""),
        ([(10, Observation(200, {}))], "pending", 10, ""),
        ([(10, Observation(200, {})), (70, Observation(200, {}))], "healthy", 10, ""),
        # a restart (the count changes) starts the minute again
        ([(10, ok()), (50, ok(restarts=1)), (100, ok(restarts=1))], "pending", 50, ""),
        ([(10, ok()), (50, ok(restarts=1)), (110, ok(restarts=1))], "healthy", 50, ""),
        ([(10, ok(restarts=4)), (50, ok(restarts=0)), (100, ok())], "pending", 50, ""),
        # so does a module that leaves running, or a report that goes missing
        ([(10, ok()), (30, ok(app="stopped")), (40, ok()), (80, ok())], "pending", 40, ""),
        ([(10, ok()), (30, ok(app="stopped")), (40, ok()), (100, ok())], "healthy", 40, ""),
        ([(10, ok()), (30, None), (50, ok()), (100, ok())], "pending", 50, ""),
        ([(10, ok()), (30, Observation(None, {})), (50, ok())], "pending", 50, ""),
        # a module the deployment declares but the agent has not reported yet
        (
            [
                (10, Observation(200, {"a": ("running", 0)}, frozenset({"a", "b"}))),
                (100, Observation(200, {"a": ("running", 0)}, frozenset({"a", "b"}))),
            ],
            "pending",
            None,
            "",
        ),
        # failures
        ([(10, crashing())], "failed", None, "module crashy is backoff"),
        ([(10, crashing(status="failed"))], "failed", None, "module crashy is failed"),
        ([(10, crashing(status="unhealthy"))], "failed", None, "module crashy is unhealthy"),
        ([(10, ok()), (40, crashing())], "failed", None, "module crashy is backoff"),
        ([(10, Observation(400, {}))], "failed", None, "reported 400"),
        ([(10, Observation(500, {"app": ("running", 0)}))], "failed", None, "reported 500"),
        # module statuses before the agent reports this version may be the previous deployment's
        ([(10, Observation(None, {"crashy": ("backoff", 3)}))], "pending", None, ""),
        # timeouts, from activation at 0
        ([(599, None)], "pending", None, ""),
        ([(600, None)], "failed", None, "no report within 600 s"),
        (
            [(300, Observation(None, {})), (600, Observation(None, {}))],
            "failed",
            None,
            "no report within 600 s",
        ),
        (
            [(10, ok(app="stopped")), (600, ok(app="stopped"))],
            "failed",
            None,
            "not healthy within 600 s",
        ),
        ([(500, ok()), (600, ok(restarts=1))], "failed", None, "not healthy within 600 s"),
        ([(540, ok()), (600, ok())], "healthy", 540, ""),  # healthy at the deadline counts
        # outcomes are final
        ([(10, ok()), (70, ok()), (80, crashing())], "healthy", 10, ""),
        ([(10, ok()), (70, ok()), (80, None), (5000, None)], "healthy", 10, ""),
        ([(10, crashing()), (20, ok()), (100, ok())], "failed", None, "module crashy is backoff"),
        ([(600, None), (610, ok()), (700, ok())], "failed", None, "no report within 600 s"),
    ],
)
def test_device_health(
    steps: list[Step], outcome: str, healthy_since: float | None, reason: str
) -> None:
    state = start(WATCH, ["dev"], now=0.0)
    for now, seen in steps:
        observations = {} if seen is None else {"dev": seen}
        state = advance(state, WATCH, {"dev"}, observations, now)
    progress = state.devices["dev"]
    assert (progress.outcome, progress.healthy_since, progress.reason) == (
        outcome,
        healthy_since,
        reason,
    )


def test_minimum_healthy_time_zero_is_healthy_at_first_sight() -> None:
    quick = spec(minHealthySecs=0)
    state = advance(start(quick, ["dev"], 0.0), quick, {"dev"}, {"dev": ok()}, 5.0)
    assert (state.devices["dev"].outcome, state.state) == ("healthy", "completed")


def test_restart_counts_are_kept_from_healthy_since() -> None:
    state = start(WATCH, ["dev"], 0.0)
    state = advance(state, WATCH, {"dev"}, {"dev": ok(restarts=2, side="running")}, 10.0)
    assert state.devices["dev"].restarts == {"app": 2, "side": 2}


# ---------------------------------------------------------------------- batches
def run_healthy(state: RolloutState, targeted: Sequence[str], now: float) -> RolloutState:
    """Two advances a minute apart with every active device running."""
    state = advance(state, STAGED, targeted, all_ok(state), now)
    return advance(state, STAGED, targeted, all_ok(state), now + 60)


def test_batch_advances_when_every_active_device_is_decided() -> None:
    state = start(STAGED, FLEET, 0.0)
    first = state.order[0]
    state = advance(state, STAGED, FLEET, {first: ok()}, 10.0)
    assert (state.batch, state.active()) == (0, {first})
    before = state
    state = advance(state, STAGED, FLEET, {first: ok()}, 70.0)
    second = state.order[1]
    assert (state.batch, state.active()) == (1, {first, second})
    assert state.devices[second] == DeviceProgress(1, 70.0)
    assert rollout_device_sets(before, state) == {second}


def test_a_pending_device_holds_the_batch() -> None:
    state = start(STAGED, FLEET, 0.0)
    state = run_healthy(state, FLEET, 10.0)  # batch 1: two devices
    first, second = state.order[:2]
    state = advance(state, STAGED, FLEET, {first: ok()}, 100.0)
    state = advance(state, STAGED, FLEET, {first: ok()}, 500.0)
    assert (state.batch, state.devices[second].outcome) == (1, "pending")


def test_all_batches_to_completion() -> None:
    state = start(STAGED, FLEET, 0.0)
    seen = [(state.batch, len(state.active()))]
    now = 0.0
    while state.state == "inProgress":
        now += 100
        state = run_healthy(state, FLEET, now)
        seen.append((state.batch, len(state.active())))
    assert seen == [(0, 1), (1, 2), (2, 10), (3, 20), (3, 20)]
    assert (state.state, state.reason) == ("completed", "")
    assert state.summary() == {
        "state": "completed",
        "batch": 4,
        "batches": 4,
        "updated": 20,
        "healthy": 20,
        "failed": 0,
        "pending": 0,
        "reason": "",
    }


def test_batches_that_add_nobody_are_passed_at_once() -> None:
    state = start(STAGED, ["solo"], 0.0)
    assert state.sizes == (1, 1, 1, 1)
    state = run_healthy(state, ["solo"], 10.0)
    assert (state.state, state.batch) == ("completed", 3)


def test_failures_under_the_threshold_complete() -> None:
    tolerant = spec(abort={"failedPercent": 50})
    state = start(tolerant, ["a", "b"], 0.0)
    state = advance(state, tolerant, ["a", "b"], {"a": crashing(), "b": ok()}, 10.0)
    state = advance(state, tolerant, ["a", "b"], {"b": ok()}, 70.0)
    assert state.state == "completed"  # 50% is not more than 50%
    assert state.summary()["failed"] == 1


# ---------------------------------------------------------------------- abort
FIVE_FIRST = ["5", "100%"]


@pytest.mark.parametrize(
    ("on_abort", "final", "assigned_after"), [("halt", "aborted", 5), ("rollback", "rolledBack", 0)]
)
def test_abort_once_min_devices_are_active(on_abort: str, final: str, assigned_after: int) -> None:
    rules = parse_rollout({"batches": FIVE_FIRST, "onAbort": on_abort})
    devices = [f"d{n}" for n in range(10)]
    state = start(rules, devices, 0.0)
    bad = sorted(state.active())[0]
    before = state
    state = advance(state, rules, devices, {bad: crashing()}, 10.0)  # the other four pending
    assert state.state == final
    assert state.reason == (
        f"1 of 5 updated devices failed (20% > 10%): {bad}: module crashy is backoff"
    )
    assert len(state.active()) == 5
    assert len(state.assigned()) == assigned_after
    changed = rollout_device_sets(before, state)
    assert changed == (before.active() if on_abort == "rollback" else frozenset())


def test_below_min_devices_waits_for_the_batch() -> None:
    rules = parse_rollout({"batches": ["2", "100%"]})
    devices = [f"d{n}" for n in range(10)]
    state = start(rules, devices, 0.0)
    bad, good = state.order[:2]
    state = advance(state, rules, devices, {bad: crashing(), good: ok()}, 10.0)
    assert (state.state, state.summary()["failed"]) == ("inProgress", 1)  # 1 of 2, < 3 active
    state = advance(state, rules, devices, {good: ok()}, 70.0)
    assert state.state == "rolledBack"
    assert state.reason.startswith("1 of 2 updated devices failed (50% > 10%): ")


@pytest.mark.parametrize(("on_abort", "final"), [("halt", "aborted"), ("rollback", "rolledBack")])
def test_single_device_first_batch_aborts_when_decided(on_abort: str, final: str) -> None:
    rules = parse_rollout({"batches": ["1", "10%", "100%"], "onAbort": on_abort})
    state = start(rules, FLEET, 0.0)
    first = state.order[0]
    state = advance(state, rules, FLEET, {first: Observation(400, {})}, 10.0)
    assert (state.state, state.batch, state.active()) == (final, 0, {first})
    assert state.reason == f"1 of 1 updated devices failed (100% > 10%): {first}: reported 400"


def test_timeout_of_an_offline_device_aborts() -> None:
    rules = parse_rollout({"batches": ["1", "100%"], "healthTimeoutSecs": 120})
    state = start(rules, FLEET, 0.0)
    state = advance(state, rules, FLEET, {}, 119.0)
    assert state.state == "inProgress"
    state = advance(state, rules, FLEET, {}, 120.0)
    assert state.state == "rolledBack"
    assert state.reason.endswith(f"{state.order[0]}: no report within 120 s")


def test_abort_reason_names_three_devices() -> None:
    rules = parse_rollout({"batches": ["50%"], "abort": {"failedPercent": 20}})
    state = start(rules, FLEET, 0.0)
    active = [d for d in state.order if d in state.active()]
    bad = {d: Observation(400, {}) for d in active[:5]}
    state = advance(state, rules, FLEET, bad, 10.0)
    named = "; ".join(f"{d}: reported 400" for d in active[:3])
    assert state.reason == f"5 of 10 updated devices failed (50% > 20%): {named}; and 2 more"


def test_share_is_rounded_in_the_reason() -> None:
    rules = parse_rollout({"batches": ["3", "100%"], "abort": {"failedPercent": 30}})
    state = start(rules, FLEET, 0.0)
    state = advance(state, rules, FLEET, {state.order[0]: crashing()}, 10.0)
    assert state.reason.startswith("1 of 3 updated devices failed (33.3% > 30%): ")


@pytest.mark.parametrize(("on_abort", "final"), [("halt", "aborted"), ("rollback", "rolledBack")])
def test_manual_abort(on_abort: str, final: str) -> None:
    rules = parse_rollout({"batches": ["1", "100%"], "onAbort": on_abort})
    for state in (start(rules, FLEET, 0.0), pause(start(rules, FLEET, 0.0))):
        stopped = abort(state, rules, "stopped by operator")
        assert (stopped.state, stopped.reason) == (final, "stopped by operator")
        assert stopped.active() == state.active()


# ---------------------------------------------------------------------- pause, terminal states
def test_paused_tracks_health_but_activates_nothing() -> None:
    state = pause(start(STAGED, FLEET, 0.0))
    assert state.state == "paused"
    first = state.order[0]
    state = advance(state, STAGED, FLEET + ["late"], {first: ok()}, 10.0)
    state = advance(state, STAGED, FLEET + ["late"], {first: ok()}, 70.0)
    assert (state.state, state.batch, state.active()) == ("paused", 0, {first})
    assert state.devices[first].outcome == "healthy"
    assert state.order[-1] == "late"  # known, not yet active

    state = resume(state, 80.0)
    assert state.state == "inProgress"
    state = advance(state, STAGED, FLEET + ["late"], {first: ok()}, 90.0)
    assert (state.state, state.batch, state.active()) == ("inProgress", 0, {first, "late"})
    state = advance(state, STAGED, FLEET + ["late"], all_ok(state), 100.0)
    state = advance(state, STAGED, FLEET + ["late"], all_ok(state), 160.0)
    assert (state.batch, state.active()) == (1, {first, "late", state.order[1]})


def test_paused_does_not_abort_until_resumed() -> None:
    state = pause(start(STAGED, FLEET, 0.0))
    first = state.order[0]
    state = advance(state, STAGED, FLEET, {first: crashing()}, 10.0)
    assert (state.state, state.devices[first].outcome) == ("paused", "failed")
    state = advance(resume(state, 20.0), STAGED, FLEET, {}, 30.0)
    assert state.state == "rolledBack"


def test_pause_and_resume_only_change_their_own_states() -> None:
    state = start(STAGED, FLEET, 0.0)
    assert resume(state, 1.0) is state
    assert pause(pause(state)) == pause(state)


def terminal_states() -> list[RolloutState]:
    completed = run_healthy(start(STAGED, ["solo"], 0.0), ["solo"], 10.0)
    halted = abort(start(spec(onAbort="halt"), FLEET, 0.0), spec(onAbort="halt"), "x")
    rolled = abort(start(STAGED, FLEET, 0.0), STAGED, "x")
    return [completed, halted, rolled]


@pytest.mark.parametrize("state", terminal_states(), ids=lambda s: s.state)
def test_terminal_states_stay(state: RolloutState) -> None:
    assert advance(state, STAGED, FLEET + ["new"], {d: crashing() for d in FLEET}, 1e6) is state
    assert advance(state, STAGED, [], {}, 1e6) is state
    assert pause(state) is state
    assert resume(state, 1e6) is state
    assert abort(state, STAGED, "again") is state


# ---------------------------------------------------------------------- target changes
def test_late_devices_join_the_current_batch() -> None:
    state = start(STAGED, FLEET, 0.0)
    before = state
    targeted = FLEET + ["late-b", "late-a"]
    state = advance(state, STAGED, targeted, {}, 10.0)
    assert state.order == before.order + tuple(ranked(["late-a", "late-b"]))
    assert state.devices["late-a"] == DeviceProgress(0, 10.0)
    assert rollout_device_sets(before, state) == {"late-a", "late-b"}
    assert state.sizes == before.sizes


def test_nothing_targeted_waits_in_the_first_batch() -> None:
    state = start(STAGED, [], 0.0)
    assert (state.state, state.batch, state.sizes, state.active()) == (
        "inProgress",
        0,
        (0, 0, 0, 0),
        frozenset(),
    )
    state = advance(state, STAGED, [], {}, 1000.0)
    assert (state.state, state.batch) == ("inProgress", 0)
    state = advance(state, STAGED, ["a", "b", "c"], {}, 1010.0)
    assert (state.batch, state.active()) == (0, {"a", "b", "c"})
    state = run_healthy(state, ["a", "b", "c"], 1020.0)
    assert state.state == "completed"


def test_an_active_device_that_leaves_is_dropped() -> None:
    state = start(STAGED, FLEET, 0.0)
    state = run_healthy(state, FLEET, 10.0)  # batch 1: two devices
    first, second = state.order[:2]
    before = state
    remaining = [d for d in FLEET if d != second]
    state = advance(state, STAGED, remaining, {first: ok()}, 100.0)
    # with nobody pending batch 1 is decided: batch 2 activates the rest of its 10 at once
    assert state.batch == 2
    assert state.active() == set(state.order[:10]) - {second}
    assert second in state.order
    assert rollout_device_sets(before, state) == set(state.order[:10]) - {first}


def test_an_active_device_that_leaves_mid_batch_drops_out_of_the_counts() -> None:
    state = start(STAGED, FLEET, 0.0)
    state = run_healthy(state, FLEET, 10.0)  # batch 1: two devices
    first, second = state.order[:2]
    state = advance(state, STAGED, FLEET + ["late"], {}, 100.0)
    state = advance(state, STAGED, [d for d in FLEET if d != second] + ["late"], {}, 110.0)
    assert (state.batch, state.active()) == (1, {first, "late"})
    assert state.summary()["updated"] == 2


def test_a_failed_device_that_leaves_no_longer_counts() -> None:
    rules = parse_rollout({"batches": ["2", "100%"]})
    state = start(rules, FLEET, 0.0)
    bad, good = state.order[:2]
    state = advance(state, rules, FLEET, {bad: crashing(), good: ok()}, 10.0)
    remaining = [d for d in FLEET if d != bad]
    state = advance(state, rules, remaining, {good: ok()}, 70.0)
    assert (state.state, state.batch, len(state.active())) == ("inProgress", 1, 19)


def test_a_device_that_comes_back_is_activated_when_due() -> None:
    state = start(STAGED, FLEET, 0.0)
    third = state.order[2]  # due in batch 2
    without = [d for d in FLEET if d != third]
    state = advance(state, STAGED, without, {}, 10.0)
    state = advance(state, STAGED, FLEET, {}, 20.0)
    assert third not in state.active()
    first = state.order[0]
    state = advance(state, STAGED, without, {first: ok()}, 30.0)
    state = advance(state, STAGED, without, {first: ok()}, 90.0)
    state = advance(state, STAGED, without, all_ok(state), 100.0)
    state = advance(state, STAGED, without, all_ok(state), 160.0)
    assert state.batch == 2
    assert third not in state.active()
    state = advance(state, STAGED, FLEET, all_ok(state), 170.0)
    assert state.devices[third] == DeviceProgress(2, 170.0)


def test_all_active_devices_leaving_moves_to_the_next_batch() -> None:
    state = start(STAGED, FLEET, 0.0)
    first = state.order[0]
    rest = [d for d in FLEET if d != first]
    state = advance(state, STAGED, rest, {}, 10.0)
    assert (state.batch, state.active()) == (1, {state.order[1]})


def test_late_device_after_a_rollout_that_started_empty_gets_the_current_batch() -> None:
    state = advance(start(STAGED, [], 0.0), STAGED, ["a"], {}, 5.0)
    assert state.devices["a"].batch == 0


# ---------------------------------------------------------------------- json, summary
def mid_rollout() -> RolloutState:
    state = start(STAGED, FLEET, 0.0)
    state = run_healthy(state, FLEET, 10.0)
    state = run_healthy(state, FLEET, 100.0)  # batch 2: ten devices
    pending = state.order[2:10]
    observations = {pending[0]: ok(restarts=3), pending[1]: Observation(None, {})}
    return advance(state, STAGED, FLEET + ["late"], observations, 200.5)


def test_json_round_trip() -> None:
    state = mid_rollout()
    doc = json.loads(json.dumps(state.to_json()))
    assert RolloutState.from_json(doc) == state
    assert RolloutState.from_json(doc).to_json() == state.to_json()
    rolled = abort(state, STAGED, "3 of 10 updated devices failed")
    assert RolloutState.from_json(json.loads(json.dumps(rolled.to_json()))) == rolled


def test_json_form() -> None:
    state = advance(start(WATCH, ["dev"], 0.0), WATCH, ["dev"], {"dev": ok(restarts=1)}, 12.5)
    assert state.to_json() == {
        "state": "inProgress",
        "order": ["dev"],
        "sizes": [1],
        "batch": 0,
        "devices": {
            "dev": {
                "batch": 0,
                "activatedAt": 0.0,
                "outcome": "pending",
                "healthySince": 12.5,
                "restarts": {"app": 1},
                "reason": "",
            }
        },
        "reason": "",
    }


def broken(change: dict[str, Any]) -> dict[str, Any]:
    doc = start(STAGED, FLEET, 0.0).to_json()
    doc.update(change)
    return doc


@pytest.mark.parametrize(
    "doc",
    [
        None,
        {},
        broken({"state": "running"}),
        broken({"sizes": []}),
        broken({"batch": 4}),
        broken({"batch": "0"}),
        broken({"order": [1, 2]}),
        broken({"devices": {"x": {"batch": 0}}}),
        broken({"devices": {"x": {**DeviceProgress(0, 0.0).to_json(), "outcome": "ok"}}}),
        broken({"reason": None}),
    ],
)
def test_from_json_rejects_other_documents(doc: Any) -> None:
    with pytest.raises(ValueError):
        RolloutState.from_json(doc)


def test_summary_mid_rollout() -> None:
    summary = mid_rollout().summary()
    assert summary == {
        "state": "inProgress",
        "batch": 3,
        "batches": 4,
        "updated": 11,
        "healthy": 2,
        "failed": 0,
        "pending": 9,
        "reason": "",
    }


def test_same_inputs_same_output() -> None:
    assert mid_rollout() == mid_rollout()
    assert json.dumps(mid_rollout().to_json()) == json.dumps(mid_rollout().to_json())
