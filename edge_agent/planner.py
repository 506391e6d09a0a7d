"""What one reconcile pass does, decided without acting: a pure function from the desired
modules, what the runtimes observe, the per-module restart records, the policy and the time to a
``Plan`` (typed commands in ``startupOrder`` stages and the records they lead to). The
``Reconciler`` observes and passes ``now``; the ``PlanRunner`` acts.

Modules no longer desired are removed; missing modules are created (pulled first), changed ones
(version, image, env, createOptions, command) removed and created again; ``status: stopped``
stops. Exited or unhealthy modules restart by their restart policy with IoT Edge's backoff
``min(base * 2**n, max)`` seconds, ``failed`` after ``max_restarts`` restarts and a counter
reset after ``healthy_reset_secs`` of healthy running. A failed pull or create waits out the
same backoff before it is tried again. A module that had exited before the agent restarted and
that its runtime no longer shows (``resumed``) is created but not started: its restart policy
goes on from the saved exit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from edge_agent.runtime.base import ModuleSpec, ModuleState
from edgefleet.manifest import ModuleStatus, RegistryCredential, RestartPolicy
from edgefleet.utctime import utc_text


@dataclass(frozen=True)
class Policy:
    interval: float = 5.0
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    max_restarts: int = 20
    healthy_reset_secs: float = 600.0
    stop_timeout: float = 10.0
    gc_interval: float = 3600.0

    def backoff(self, n: int) -> float:
        """The wait before restart (or create attempt) ``n + 1``."""
        return float(min(self.backoff_base * (2 ** min(n, 30)), self.backoff_max))


@dataclass(frozen=True)
class RestartRecord:
    """What the agent keeps about one module that its runtime cannot tell (saved across agent
    restarts), with the last observation of it."""

    restart_count: int = 0
    last_restart: datetime | None = None
    status: str = "unknown"  # runtimeStatus: running, backoff, unhealthy, stopped, failed
    description: str = ""
    failures: int = 0  # consecutive failed pulls/creates
    backoff_until: datetime | None = None  # end of the current backoff
    healthy_since: datetime | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    image_hash: str = ""
    deployed: ModuleSpec | None = None  # the spec the module runs with (reported version/image)
    spec_hash: str = ""  # the spec this record belongs to
    running: bool = False  # at the last observation
    resumed: bool = False  # exited before the agent restarted, not started since

    def reported(self) -> dict[str, Any]:
        """The runtime part of the module's ``$edgeAgent`` reported entry (IoT Edge's names)."""
        out: dict[str, Any] = {"runtimeStatus": self.status, "restartCount": self.restart_count}
        if self.exit_code is not None:
            out["exitCode"] = self.exit_code
        if self.description:
            out["statusDescription"] = self.description
        for key, value in (
            ("lastStartTimeUtc", self.started_at),
            ("lastExitTimeUtc", self.finished_at),
            ("lastRestartTimeUtc", self.last_restart),
        ):
            if value is not None:
                out[key] = utc_text(value)
        return out


@dataclass(frozen=True)
class DesiredModule:
    spec: ModuleSpec  # spec.type names the runtime
    status: ModuleStatus = "running"
    restart_policy: RestartPolicy = "always"
    startup_order: int = 0


# ---------------------------------------------------------------------- commands
@dataclass(frozen=True)
class _OnModule:
    module: str
    runtime: str  # the kind of runtime that holds the module


@dataclass(frozen=True)
class _StopsFirst(_OnModule):
    timeout: float  # seconds the module gets to stop before it is killed


@dataclass(frozen=True)
class Remove(_StopsFirst):
    """Stop and remove (a module no longer desired, or one whose spec changed)."""


@dataclass(frozen=True)
class Create(_OnModule):
    """Pull or check what the module needs, create it and, with ``start``, start it."""

    spec: ModuleSpec
    credentials: Mapping[str, RegistryCredential]
    start: bool


@dataclass(frozen=True)
class Start(_OnModule):
    """Start a module that was created but never started."""


@dataclass(frozen=True)
class Stop(_StopsFirst):
    """Stop a running module (desired ``status: stopped``)."""


@dataclass(frozen=True)
class Restart(_StopsFirst):
    """Stop and start again (restart policy, or an operator's ``restartModule``)."""


Command = Remove | Create | Start | Stop | Restart


@dataclass(frozen=True)
class ModulePlan:
    """One desired module's commands (run in sequence, stopping at the first failure) and its
    record after them: ``record`` when all succeed (the runtime's observation afterwards is
    added by ``after_run``), ``if_failed[i]`` when command ``i`` fails (its error text becomes
    the description)."""

    module: str
    startup_order: int
    commands: tuple[Command, ...]
    record: RestartRecord
    if_failed: tuple[RestartRecord, ...]


@dataclass(frozen=True)
class Stage:
    """Commands run together: one module's in sequence, different modules' in parallel."""

    order: int | None  # startupOrder; None for the removal of modules no longer desired
    commands: tuple[Command, ...]


@dataclass(frozen=True)
class Plan:
    removals: tuple[Remove, ...] = ()  # modules no longer desired, before everything else
    modules: tuple[ModulePlan, ...] = ()

    @property
    def records(self) -> dict[str, RestartRecord]:
        return {m.module: m.record for m in self.modules}

    def module(self, name: str) -> ModulePlan:
        for m in self.modules:
            if m.module == name:
                return m
        raise KeyError(name)

    @property
    def stages(self) -> tuple[Stage, ...]:
        """Removals first, then ``startupOrder`` groups, lower first; stages without commands
        are left out."""
        out = [Stage(None, self.removals)] if self.removals else []
        for order in sorted({m.startup_order for m in self.modules}):
            group = tuple(c for m in self.modules if m.startup_order == order for c in m.commands)
            if group:
                out.append(Stage(order, group))
        return tuple(out)

    @property
    def commands(self) -> tuple[Command, ...]:
        return tuple(c for stage in self.stages for c in stage.commands)


# ---------------------------------------------------------------------- planning
def plan(
    desired: Mapping[str, DesiredModule],
    observed: Mapping[str, Mapping[str, ModuleState]],
    records: Mapping[str, RestartRecord],
    policy: Policy,
    now: datetime,
    credentials: Mapping[str, RegistryCredential] | None = None,
) -> Plan:
    """The commands and records of one pass. ``observed`` holds each runtime's modules by
    runtime kind (a kind missing there has no runtime on this device); ``now`` is aware UTC."""
    removals: list[Remove] = []
    current: dict[str, ModuleState] = {}
    for kind, states in observed.items():
        for name, st in states.items():
            want = desired.get(name)
            if want is not None and want.spec.type == kind:
                current[name] = st
            else:
                removals.append(Remove(name, kind, policy.stop_timeout))
    modules = tuple(
        _plan_module(
            want,
            current.get(name),
            records.get(name, RestartRecord()),
            want.spec.type in observed,
            policy,
            now,
            credentials or {},
        )
        for name, want in desired.items()
    )
    return Plan(tuple(removals), modules)


class _Steps:
    """A module's commands with the record each one leaves when it fails."""

    def __init__(self, name: str, kind: str, order: int) -> None:
        self.name, self.kind, self.order = name, kind, order
        self.commands: list[Command] = []
        self.if_failed: list[RestartRecord] = []

    def add(self, command: Command, if_failed: RestartRecord) -> None:
        self.commands.append(command)
        self.if_failed.append(if_failed)

    def done(self, record: RestartRecord) -> ModulePlan:
        return ModulePlan(
            self.name, self.order, tuple(self.commands), record, tuple(self.if_failed)
        )


def _failed(rec: RestartRecord, description: str = "") -> RestartRecord:
    return replace(rec, status="failed", description=description)


def _plan_module(
    want: DesiredModule,
    st: ModuleState | None,
    rec: RestartRecord,
    has_runtime: bool,
    policy: Policy,
    now: datetime,
    credentials: Mapping[str, RegistryCredential],
) -> ModulePlan:
    spec, kind = want.spec, want.spec.type
    steps = _Steps(spec.name, kind, want.startup_order)
    if not has_runtime:
        return steps.done(_failed(rec, f"no {kind} runtime on this device"))
    if st is not None and st.spec_hash != spec.spec_hash:
        steps.add(Remove(spec.name, kind, policy.stop_timeout), _failed(rec))
        rec, st = RestartRecord(), None
    elif rec.spec_hash and rec.spec_hash != spec.spec_hash:
        rec = RestartRecord()  # saved state of an older version: a new deployment starts afresh
    rec = replace(rec, spec_hash=spec.spec_hash)
    if st is None:
        if rec.failures and rec.backoff_until is not None and now < rec.backoff_until:
            return steps.done(replace(rec, status="backoff"))
        retry = now + timedelta(seconds=policy.backoff(rec.failures))
        start = want.status == "running" and not rec.resumed
        steps.add(
            Create(spec.name, kind, spec, credentials, start),
            replace(rec, failures=rec.failures + 1, backoff_until=retry, status="failed"),
        )
        rec = replace(rec, failures=0, backoff_until=None, description="", deployed=spec)
        if not rec.resumed:
            return steps.done(rec)
        # created, not started: its restart policy goes on from the exit saved before
        running, started, health = False, False, None
    else:
        rec = observed(replace(rec, deployed=spec), st)
        running, started, health = st.running, st.started_at is not None, st.health
    if want.status == "stopped":
        if running:
            steps.add(Stop(spec.name, kind, policy.stop_timeout), _failed(rec))
        return steps.done(replace(rec, status="stopped", description="stopped by deployment"))
    restarts = want.restart_policy
    if running:
        unhealthy = health == "unhealthy"
        if unhealthy and restarts in ("on-unhealthy", "always"):
            return _restart(steps, rec, policy, now, "unhealthy")
        rec = replace(rec, status="unhealthy" if unhealthy else "running", description="")
        if unhealthy:
            rec = replace(rec, healthy_since=None)
        elif rec.healthy_since is None:
            rec = replace(rec, healthy_since=now)
        elif (now - rec.healthy_since).total_seconds() >= policy.healthy_reset_secs:
            rec = replace(rec, restart_count=0)
        return steps.done(rec)
    rec = replace(rec, healthy_since=None)
    if not started and not rec.resumed:  # created, never started (a crash between the two)
        steps.add(Start(spec.name, kind), _failed(rec))
        return steps.done(rec)
    code = rec.exit_code or 0  # the saved exit of a resumed module, else the observed one
    if restarts == "always" or (restarts in ("on-failure", "on-unhealthy") and code != 0):
        return _restart(steps, rec, policy, now, f"exit {code}")
    status = "stopped" if code == 0 else "failed"
    return steps.done(replace(rec, status=status, description=f"exited with code {code}"))


def _restart(
    steps: _Steps, rec: RestartRecord, policy: Policy, now: datetime, reason: str
) -> ModulePlan:
    rec = replace(rec, healthy_since=None)  # the reset timer counts healthy running only
    if rec.restart_count >= policy.max_restarts:
        return steps.done(_failed(rec, f"{reason}; gave up after {rec.restart_count} restarts"))
    # an exit counts from when it ended; an unhealthy module from its last restart
    since = rec.last_restart if reason == "unhealthy" else (rec.finished_at or rec.last_restart)
    delay = policy.backoff(rec.restart_count)
    if since is not None and (now - since).total_seconds() < delay:
        return steps.done(
            replace(
                rec,
                status="backoff",
                description=f"{reason}; restart in {delay:g}s",
                backoff_until=since + timedelta(seconds=delay),
            )
        )
    steps.add(Restart(steps.name, steps.kind, policy.stop_timeout), _failed(rec))
    return steps.done(
        replace(rec, restart_count=rec.restart_count + 1, last_restart=now, backoff_until=None)
    )


# ---------------------------------------------------------------------- after acting
def observed(rec: RestartRecord, st: ModuleState | None) -> RestartRecord:
    """``rec`` with what the runtime shows of the module now."""
    if st is None:
        return rec
    rec = replace(rec, image_hash=st.image_hash)
    if st.started_at is None:  # created, never ran here: keep what we knew of earlier runs
        return rec
    rec = replace(
        rec,
        resumed=False,
        running=st.running,
        exit_code=st.exit_code,
        started_at=st.started_at,
        finished_at=st.finished_at,
    )
    if st.running:
        rec = replace(rec, status="unhealthy" if st.health == "unhealthy" else "running")
    return rec


def after_run(
    module: ModulePlan, failed_at: int | None, error: str, state: ModuleState | None
) -> RestartRecord:
    """The module's record once its commands ran: all succeeded (``failed_at`` None; ``state``
    is the runtime's observation afterwards) or command ``failed_at`` failed with ``error``."""
    if failed_at is None:
        return observed(module.record, state)
    return replace(module.if_failed[failed_at], description=error)


def restarted_by_operator(rec: RestartRecord, now: datetime) -> RestartRecord:
    """An operator's restart (``restartModule``) also revives a module that gave up."""
    return replace(rec, restart_count=0, last_restart=now, backoff_until=None)
