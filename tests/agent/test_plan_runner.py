"""The plan runner and the reconciler loop on an in-memory runtime and a clock the test moves:
stage order, parallel modules within a stage, failures reported and retried with backoff."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from edge_agent.plan_runner import Outcome, PlanRunner
from edge_agent.planner import (
    Create,
    DesiredModule,
    Plan,
    Policy,
    Restart,
    plan,
)
from edge_agent.reconciler import Reconciler
from edge_agent.runtime.base import LogLine, ModuleSpec, ModuleState, RuntimeFailure
from edgefleet.manifest import RegistryCredential, parse_edge_agent

START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeRuntime:
    """Modules as records in memory; ``calls`` in the order they came; ``fail`` maps
    ``(call, module)`` to the error text that call raises."""

    kind = "process"

    def __init__(self, clock: Any = None) -> None:
        self.clock = clock or (lambda: START)
        self.states: dict[str, ModuleState] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[tuple[str, str], str] = {}
        self.on_call: Any = None
        self._lock = threading.Lock()

    def _call(self, call: str, name: str) -> None:
        with self._lock:
            self.calls.append((call, name))
        if self.on_call is not None:
            self.on_call(call, name)
        if (call, name) in self.fail:
            raise RuntimeFailure(self.fail[(call, name)])

    def modules(self) -> dict[str, ModuleState]:
        return dict(self.states)

    def prepare(self, spec: ModuleSpec, credentials: dict[str, RegistryCredential]) -> None:
        self._call("prepare", spec.name)

    def create(self, spec: ModuleSpec) -> None:
        self._call("create", spec.name)
        self.states[spec.name] = ModuleState(spec.name, False, spec.spec_hash)

    def start(self, name: str) -> None:
        self._call("start", name)
        st = self.states[name]
        self.states[name] = ModuleState(name, True, st.spec_hash, started_at=self.clock())

    def stop(self, name: str, timeout: float = 10.0) -> None:
        self._call("stop", name)
        st = self.states.get(name)
        if st is not None and st.running:
            self.exit(name, 143)

    def remove(self, name: str) -> None:
        self._call("remove", name)
        self.states.pop(name, None)

    def status(self, name: str) -> ModuleState | None:
        return self.states.get(name)

    def exit(self, name: str, code: int) -> None:
        st = self.states[name]
        self.states[name] = ModuleState(
            name, False, st.spec_hash, code, st.started_at, self.clock()
        )

    def logs(self, name: str, *args: Any, **kw: Any) -> list[LogLine]:
        return []

    def adopt(self, desired: dict[str, ModuleSpec]) -> None:
        pass

    def shutdown(self, stop_modules: bool) -> None:
        pass

    def gc(self, in_use: set[str]) -> list[str]:
        return []


def spec(name: str) -> ModuleSpec:
    return ModuleSpec(name, "process", command=["run"])


def orders(**by_name: int) -> dict[str, DesiredModule]:
    return {n: DesiredModule(spec(n), startup_order=o) for n, o in by_name.items()}


def test_stages_in_order_modules_of_a_stage_in_parallel() -> None:
    rt = FakeRuntime()
    rt.states["gone"] = ModuleState("gone", True)
    both_started = threading.Barrier(2, timeout=10)

    def on_call(call: str, name: str) -> None:
        if call == "start" and name in ("a", "b"):
            both_started.wait()  # raises BrokenBarrierError unless a and b start together

    rt.on_call = on_call
    runner = PlanRunner({"process": rt})
    todo = plan(orders(a=0, b=0, c=1), {"process": rt.modules()}, {}, Policy(), START)
    outcomes = runner.run(todo, lambda o: None)
    runner.shutdown()

    assert [o.failed_at for o in outcomes] == [None, None, None, None]
    names = [n for _, n in rt.calls]
    assert rt.calls[:2] == [("stop", "gone"), ("remove", "gone")]  # removals first
    # c (startupOrder 1) is touched only once a and b (order 0) were started
    assert names.index("c") > max(i for i, n in enumerate(names) if n in ("a", "b"))
    assert [c for c in rt.calls if c[1] == "c"] == [
        ("prepare", "c"),
        ("create", "c"),
        ("start", "c"),
    ]
    assert outcomes[-1].state is not None and outcomes[-1].state.running


def test_a_failed_create_is_cleaned_up_and_reported_the_others_go_on() -> None:
    rt = FakeRuntime()
    rt.fail[("create", "a")] = "create failed: no such image"
    runner = PlanRunner({"process": rt})
    todo = plan(orders(a=0, b=0, c=1), {"process": {}}, {}, Policy(), START)
    seen: list[Outcome] = []
    runner.run(todo, seen.append)
    runner.shutdown()

    by_name = {o.module: o for o in seen}
    assert by_name["a"].failed_at == 0 and by_name["a"].error == "create failed: no such image"
    assert by_name["a"].commands == (Create("a", "process", spec("a"), {}, True),)
    assert ("remove", "a") in rt.calls and ("start", "a") not in rt.calls
    assert by_name["b"].failed_at is None and by_name["c"].failed_at is None
    assert sorted(rt.states) == ["b", "c"]


def test_execute_raises_what_the_runtime_raised() -> None:
    rt = FakeRuntime()
    rt.states["m"] = ModuleState("m", True)
    rt.fail[("start", "m")] = "engine down"
    runner = PlanRunner({"process": rt})
    try:
        runner.execute(Restart("m", "process", 1.0))
    except RuntimeFailure as exc:
        assert str(exc) == "engine down"
    else:
        raise AssertionError("no error")
    finally:
        runner.shutdown()
    assert rt.calls == [("stop", "m"), ("start", "m")]


def deployment(**modules: dict[str, Any]) -> Any:
    return parse_edge_agent(
        {
            "schemaVersion": "1.1",
            "runtime": {"type": "docker"},
            "systemModules": {"edgeAgent": {}},
            "modules": {
                n: {"type": "process", "settings": {"command": ["run"]}, **m}
                for n, m in modules.items()
            },
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, secs: float) -> None:
        self.now += timedelta(seconds=secs)


def test_reconciler_restarts_by_its_clock_and_reports_iot_edge_names() -> None:
    clock = Clock()
    rt = FakeRuntime(clock)
    policy = Policy(backoff_base=10, backoff_max=40, max_restarts=2)
    rec = Reconciler({"process": rt}, policy, clock=clock)
    rec.set_desired(deployment(m={"restartPolicy": "on-failure"}))
    try:
        assert rec.step().commands == (Create("m", "process", rec.specs()["m"][1], {}, True),)
        assert rec.report_modules()["m"]["runtimeStatus"] == "running"

        clock.advance(1)
        rt.exit("m", 3)
        clock.advance(9)  # 9 s after the exit: the first backoff (10 s) is not over
        assert rec.step().commands == ()
        m = rec.report_modules()["m"]
        assert m["runtimeStatus"] == "backoff" and m["exitCode"] == 3
        assert m["lastExitTimeUtc"] == "2026-01-02T03:04:06Z"
        assert m["statusDescription"] == "exit 3; restart in 10s"

        clock.advance(1)
        assert rec.step().commands == (Restart("m", "process", policy.stop_timeout),)
        m = rec.report_modules()["m"]
        assert m["runtimeStatus"] == "running" and m["restartCount"] == 1
        assert m["lastRestartTimeUtc"] == m["lastStartTimeUtc"] == "2026-01-02T03:04:16Z"

        # the second restart fails in the runtime: failed with the error, the count unchanged
        rt.exit("m", 3)
        clock.advance(20)
        rt.fail[("start", "m")] = "cannot start run"
        assert rec.step().commands == (Restart("m", "process", policy.stop_timeout),)
        m = rec.report_modules()["m"]
        assert m["runtimeStatus"] == "failed" and m["restartCount"] == 1
        assert m["statusDescription"] == "cannot start run"
    finally:
        rec.shutdown(True)


def test_reconciler_create_failure_waits_out_its_backoff() -> None:
    clock = Clock()
    rt = FakeRuntime(clock)
    rt.fail[("prepare", "m")] = "pull m failed: denied"
    rec = Reconciler({"process": rt}, Policy(backoff_base=10, backoff_max=40), clock=clock)
    rec.set_desired(deployment(m={}))
    try:
        assert len(rec.step().commands) == 1
        m = rec.report_modules()["m"]
        assert m["runtimeStatus"] == "failed" and m["statusDescription"] == "pull m failed: denied"
        assert rec.records["m"].backoff_until == START + timedelta(seconds=10)
        clock.advance(5)
        assert rec.step().commands == ()
        assert rec.report_modules()["m"]["runtimeStatus"] == "backoff"
        clock.advance(5)
        del rt.fail[("prepare", "m")]
        assert len(rec.step().commands) == 1
        assert rec.report_modules()["m"]["runtimeStatus"] == "running"
        assert rec.records["m"].failures == 0
    finally:
        rec.shutdown(True)


def test_no_deployment_no_plan() -> None:
    rec = Reconciler({"process": FakeRuntime()})
    assert rec.step() == Plan()
    rec.shutdown(True)
