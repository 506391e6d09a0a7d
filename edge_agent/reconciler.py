"""Turns the desired ``$edgeAgent`` deployment into running modules and keeps them there.

Every ``interval`` seconds (or at once when the desired state changes) the reconciler compares
desired modules with what the runtimes report and acts: remove modules no longer desired,
create (pull first) missing or changed ones (a version, image, env or createOptions change
recreates), start/stop by ``status``, and restart exited or unhealthy modules by their restart
policy with IoT Edge's backoff ``min(base * 2**n, max)`` seconds, ``failed`` after ``max_restarts``
restarts and a counter reset after ``healthy_reset_secs`` of healthy running. Modules run in
``startupOrder`` groups: lower first, equal orders in parallel. A module whose pull or create
fails is reported and retried with the same backoff; the others go on.

With a ``RestartStateStore`` the per-module restart state (counter, times, exit code, status,
backoff end, the spec hash it belongs to) is saved on every change and loaded at start, so an
agent restart neither revives a ``failed`` module nor restarts a crash loop's counter. A module
that had exited before the agent restarted and that its runtime no longer shows (process
modules die with the agent) is created but not started: its restart policy goes on from the
saved exit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from edge_agent.restart_state import RestartStateStore, from_utc_text, to_utc_text
from edge_agent.runtime.base import ModuleSpec, ModuleState, Runtime, RuntimeError_
from edgefleet.manifest import EdgeAgentDesired, Module

log = logging.getLogger("edgefleet.agent.reconciler")


@dataclass
class Policy:
    interval: float = 5.0
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    max_restarts: int = 20
    healthy_reset_secs: float = 600.0
    stop_timeout: float = 10.0
    gc_interval: float = 3600.0

    def backoff(self, n: int) -> float:
        return float(min(self.backoff_base * (2 ** min(n, 30)), self.backoff_max))


@dataclass
class Record:
    """Agent-side bookkeeping for one module (what the runtime cannot tell us)."""

    restart_count: int = 0
    last_restart: datetime | None = None
    status: str = "unknown"
    description: str = ""
    failures: int = 0  # consecutive prepare/create failures
    retry_at: float = 0.0
    healthy_since: float | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    image_hash: str = ""
    deployed: ModuleSpec | None = None  # the spec the module runs with (reported version/image)
    spec_hash: str = ""  # the spec this bookkeeping belongs to
    running: bool = False  # at the last observation
    backoff_until: datetime | None = None  # end of the current backoff, for the saved state
    resumed: bool = False  # exited before the agent restarted, not started since

    def to_state(self) -> dict[str, Any]:
        return {
            "specHash": self.spec_hash,
            "restartCount": self.restart_count,
            "lastRestartTimeUtc": to_utc_text(self.last_restart),
            "lastStartTimeUtc": to_utc_text(self.started_at),
            "lastExitTimeUtc": to_utc_text(self.finished_at),
            "exitCode": self.exit_code,
            "running": self.running,
            "status": self.status,
            "description": self.description,
            "failures": self.failures,
            "backoffUntilUtc": to_utc_text(self.backoff_until),
            "imageHash": self.image_hash,
        }

    @classmethod
    def from_state(cls, entry: dict[str, Any], policy: Policy) -> Record:
        """A record from saved state; raises ValueError for an entry of the wrong shape."""

        def num(key: str) -> int:
            value = entry.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{key}: {value!r}")
            return value

        def text(key: str) -> str:
            value = entry.get(key, "")
            if not isinstance(value, str):
                raise ValueError(f"{key}: {value!r}")
            return value

        now_wall, now = datetime.now(UTC), time.monotonic()

        def when(key: str) -> datetime | None:
            # a clock that went back (no RTC after a reboot) must not hold a module for years
            t = from_utc_text(entry.get(key))
            return min(t, now_wall) if t is not None else None

        code = entry.get("exitCode")
        if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
            raise ValueError(f"exitCode: {code!r}")
        rec = cls(
            restart_count=num("restartCount"),
            last_restart=when("lastRestartTimeUtc"),
            status=text("status") or "unknown",
            description=text("description"),
            failures=num("failures"),
            exit_code=code,
            started_at=when("lastStartTimeUtc"),
            finished_at=when("lastExitTimeUtc"),
            image_hash=text("imageHash"),
            spec_hash=text("specHash"),
            running=entry.get("running") is True,
        )
        until = from_utc_text(entry.get("backoffUntilUtc"))
        if until is not None:
            left = min(max((until - now_wall).total_seconds(), 0.0), policy.backoff_max)
            rec.backoff_until = now_wall + timedelta(seconds=left)
            if rec.failures:  # a failed pull/create waits out its backoff
                rec.retry_at = now + left
        rec.resumed = not rec.running and rec.finished_at is not None and code is not None
        return rec


@dataclass
class Plan:
    """The actions of one reconcile pass, for logs and tests."""

    actions: list[tuple[str, str]] = field(default_factory=list)

    def add(self, action: str, module: str) -> None:
        self.actions.append((action, module))


EnvProvider = Callable[[str, Module], dict[str, str]]


def module_spec(name: str, mod: Module, extra_env: dict[str, str] | None = None) -> ModuleSpec:
    env = dict(extra_env or {})
    env.update(mod.env_values())
    return ModuleSpec(
        name=name,
        type=mod.type,
        version=mod.version,
        image=mod.settings.image or "",
        create_options=mod.settings.create_options() if mod.type == "docker" else {},
        command=mod.settings.argv(),
        working_dir=mod.settings.workingDir,
        env=env,
        image_pull_policy=mod.imagePullPolicy,
        health_check=hc.model_dump() if (hc := mod.settings.healthCheck) else None,
    )


class Reconciler:
    def __init__(
        self,
        runtimes: dict[str, Runtime],
        policy: Policy | None = None,
        env_provider: EnvProvider | None = None,
        on_change: Callable[[], None] | None = None,
        state: RestartStateStore | None = None,
    ) -> None:
        self.runtimes = runtimes
        self.policy = policy or Policy()
        self.env_provider = env_provider
        self.on_change = on_change
        self.desired: EdgeAgentDesired | None = None
        self.records: dict[str, Record] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="reconcile")
        self._last_report: dict[str, Any] | None = None
        self._last_gc = time.monotonic()
        self.passes = 0
        self.state = state
        if state is not None:
            self._load_state(state)

    # ------------------------------------------------------------------ saved restart state
    def _load_state(self, state: RestartStateStore) -> None:
        for name, entry in state.load().items():
            try:
                self.records[name] = Record.from_state(entry, self.policy)
            except ValueError as exc:
                log.warning("restart state of %s ignored: %s", name, exc)
        if self.records:
            log.info(
                "restart state loaded: %s",
                ", ".join(f"{n} {r.status} x{r.restart_count}" for n, r in self.records.items()),
            )

    def _persist(self) -> None:
        """Save the restart state (the store writes only when it changed)."""
        if self.state is None:
            return
        self.state.save({n: r.to_state() for n, r in list(self.records.items())})

    # ------------------------------------------------------------------ desired state
    def set_desired(self, desired: EdgeAgentDesired) -> None:
        with self._lock:
            self.desired = desired
            for name in list(self.records):
                if name not in desired.modules:
                    del self.records[name]
        self._wake.set()

    def specs(self) -> dict[str, tuple[Module, ModuleSpec]]:
        if self.desired is None:
            return {}
        out = {}
        for name, mod in self.desired.modules.items():
            extra = self.env_provider(name, mod) if self.env_provider else {}
            out[name] = (mod, module_spec(name, mod, extra))
        return out

    def adopt(self) -> None:
        """At start: keep our modules that match the desired ones, remove leftovers."""
        specs = self.specs()
        for kind, rt in self.runtimes.items():
            rt.adopt({n: s for n, (m, s) in specs.items() if m.type == kind})

    # ------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # one bad pass must not kill the agent
                log.exception("reconcile pass failed")
            self._wake.wait(self.policy.interval)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def step(self) -> Plan:
        plan = Plan()
        with self._lock:
            if self.desired is None:  # no deployment known yet: touch nothing
                return plan
            specs = self.specs()
            creds = self.desired.runtime.settings.registryCredentials if self.desired else {}
            current: dict[str, ModuleState] = {}
            for kind, rt in self.runtimes.items():
                for name, st in rt.modules().items():
                    if name in specs and specs[name][0].type == kind:
                        current[name] = st
                        continue
                    plan.add("remove", name)
                    rt.stop(name, self.policy.stop_timeout)
                    rt.remove(name)
            for order in sorted({m.startupOrder for m, _ in specs.values()}):
                group = [n for n, (m, _) in specs.items() if m.startupOrder == order]
                futures = [
                    self._pool.submit(
                        self._converge_safe,
                        n,
                        specs[n][0],
                        specs[n][1],
                        current.get(n),
                        creds,
                        plan,
                    )
                    for n in group
                ]
                for f in futures:
                    f.result()
            if time.monotonic() - self._last_gc >= self.policy.gc_interval:
                self._last_gc = time.monotonic()
                self._gc(specs)
            self.passes += 1
            self._persist()
        self._notify()
        return plan

    def _gc(self, specs: dict[str, tuple[Module, ModuleSpec]]) -> None:
        for kind, rt in self.runtimes.items():
            in_use = {
                s.image if kind == "docker" else n for n, (m, s) in specs.items() if m.type == kind
            }
            try:
                removed = rt.gc(in_use)
            except Exception:  # housekeeping must never stop reconciling
                log.exception("garbage collection failed")
                continue
            if removed:
                log.info("removed unused %s artifacts: %s", kind, ", ".join(removed))

    def _notify(self) -> None:
        report = self.report_modules()
        if report != self._last_report:
            self._last_report = report
            if self.on_change:
                self.on_change()

    # ------------------------------------------------------------------ one module
    def _converge_safe(
        self,
        name: str,
        mod: Module,
        spec: ModuleSpec,
        st: ModuleState | None,
        creds: dict[str, Any],
        plan: Plan,
    ) -> None:
        """One module's trouble (a start refused by the engine ...) never stops the others."""
        try:
            self._converge(name, mod, spec, st, creds, plan)
        except Exception as exc:
            rec = self.records.setdefault(name, Record())
            rec.status, rec.description = "failed", str(exc) or type(exc).__name__
            log.warning("module %s: %s", name, rec.description)

    def _converge(
        self,
        name: str,
        mod: Module,
        spec: ModuleSpec,
        st: ModuleState | None,
        creds: dict[str, Any],
        plan: Plan,
    ) -> None:
        rec = self.records.setdefault(name, Record())
        rt = self.runtimes.get(mod.type)
        if rt is None:
            rec.status, rec.description = "failed", f"no {mod.type} runtime on this device"
            return
        now = time.monotonic()
        if st is not None and st.spec_hash != spec.spec_hash:
            plan.add("update", name)
            rt.stop(name, self.policy.stop_timeout)
            rt.remove(name)
            self.records[name] = rec = Record()
            st = None
        elif rec.spec_hash and rec.spec_hash != spec.spec_hash:
            # saved state of an older version of the module: a new deployment starts afresh
            self.records[name] = rec = Record()
        rec.spec_hash = spec.spec_hash
        if st is None:
            if now < rec.retry_at:
                rec.status = "backoff"
                return
            plan.add("create", name)
            try:
                rt.prepare(spec, creds)
                rt.create(spec)
                if mod.status == "running" and not rec.resumed:
                    plan.add("start", name)
                    rt.start(name)
            except (RuntimeError_, OSError) as exc:
                rec.failures += 1
                delay = self.policy.backoff(rec.failures - 1)
                rec.retry_at = now + delay
                rec.backoff_until = datetime.now(UTC) + timedelta(seconds=delay)
                rec.status, rec.description = "failed", str(exc)
                log.warning("module %s: %s", name, exc)
                try:
                    rt.remove(name)
                except RuntimeError_:
                    pass
                return
            rec.failures = 0
            rec.backoff_until = None
            rec.description = ""
            rec.deployed = spec
            st = rt.status(name)
            if st is None or not rec.resumed:
                self._observe(rec, st)
                return
            # it had exited before the agent restarted: its restart policy goes on below
        rec.deployed = spec
        self._observe(rec, st)
        if mod.status == "stopped":
            if st.running:
                plan.add("stop", name)
                rt.stop(name, self.policy.stop_timeout)
                self._observe(rec, rt.status(name))
            rec.status, rec.description = "stopped", "stopped by deployment"
            return
        policy = mod.restartPolicy
        if st.running:
            unhealthy = st.health == "unhealthy"
            if unhealthy and policy in ("on-unhealthy", "always"):
                self._restart(name, rt, rec, plan, now_wall=datetime.now(UTC), reason="unhealthy")
                return
            rec.status = "unhealthy" if unhealthy else "running"
            rec.description = ""
            if unhealthy:
                rec.healthy_since = None
            elif rec.healthy_since is None:
                rec.healthy_since = now
            elif now - rec.healthy_since >= self.policy.healthy_reset_secs:
                rec.restart_count = 0
            return
        rec.healthy_since = None
        if st.started_at is None and not rec.resumed:
            # created, never started (crash between create and start)
            plan.add("start", name)
            rt.start(name)
            self._observe(rec, rt.status(name))
            return
        code = rec.exit_code or 0  # the saved exit of a resumed module, else the observed one
        wanted = policy == "always" or (policy in ("on-failure", "on-unhealthy") and code != 0)
        if not wanted:
            rec.status = "stopped" if code == 0 else "failed"
            rec.description = f"exited with code {code}"
            return
        self._restart(name, rt, rec, plan, now_wall=datetime.now(UTC), reason=f"exit {code}")

    def _restart(
        self, name: str, rt: Runtime, rec: Record, plan: Plan, now_wall: datetime, reason: str
    ) -> None:
        if rec.restart_count >= self.policy.max_restarts:
            rec.status = "failed"
            rec.description = f"{reason}; gave up after {rec.restart_count} restarts"
            return
        since = rec.finished_at or rec.last_restart
        delay = self.policy.backoff(rec.restart_count)
        if reason == "unhealthy":
            since = rec.last_restart
        if since is not None and (now_wall - since).total_seconds() < delay:
            rec.status = "backoff"
            rec.description = f"{reason}; restart in {delay:g}s"
            rec.backoff_until = since + timedelta(seconds=delay)
            return
        plan.add("restart", name)
        rt.stop(name, self.policy.stop_timeout)
        rt.start(name)
        rec.restart_count += 1
        rec.last_restart = datetime.now(UTC)
        rec.backoff_until = None
        self._observe(rec, rt.status(name))
        self._persist()  # at once: a crash right after a restart must not lose the count

    def _observe(self, rec: Record, st: ModuleState | None) -> None:
        if st is None:
            return
        rec.image_hash = st.image_hash
        if st.started_at is None:  # created, never ran here: keep what we knew of earlier runs
            return
        rec.resumed = False
        rec.running = st.running
        rec.exit_code = st.exit_code
        rec.started_at = st.started_at
        rec.finished_at = st.finished_at
        if st.running:
            rec.status = "unhealthy" if st.health == "unhealthy" else "running"

    # ------------------------------------------------------------------ commands
    def restart_module(self, name: str) -> None:
        with self._lock:
            if self.desired is None or name not in self.desired.modules:
                raise KeyError(name)
            mod = self.desired.modules[name]
            rt = self.runtimes.get(mod.type)
            if rt is None or rt.status(name) is None:
                raise KeyError(name)
            rt.stop(name, self.policy.stop_timeout)
            rt.start(name)
            rec = self.records.setdefault(name, Record())
            rec.restart_count = 0  # an operator's restart revives a module that gave up
            rec.last_restart = datetime.now(UTC)
            rec.backoff_until = None
            self._observe(rec, rt.status(name))
            self._persist()
        self._notify()

    def runtime_for(self, name: str) -> Runtime | None:
        if self.desired is None or name not in self.desired.modules:
            return None
        return self.runtimes.get(self.desired.modules[name].type)

    def shutdown(self, stop_modules: bool) -> None:
        self._pool.shutdown(wait=True)
        for rt in self.runtimes.values():
            rt.shutdown(stop_modules)

    # ------------------------------------------------------------------ report
    def report_modules(self) -> dict[str, Any]:
        """``modules`` of the $edgeAgent reported properties, in IoT Edge's shape."""
        out: dict[str, Any] = {}
        if self.desired is None:
            return out
        for name, mod in self.desired.modules.items():
            rec = self.records.get(name, Record())
            dep = rec.deployed or module_spec(name, mod)
            entry: dict[str, Any] = {
                "type": mod.type,
                "version": dep.version,
                "status": mod.status,
                "restartPolicy": mod.restartPolicy,
                "runtimeStatus": rec.status,
                "restartCount": rec.restart_count,
                "settings": {"imageHash": rec.image_hash},
            }
            if mod.type == "docker":
                entry["settings"]["image"] = dep.image
            else:
                entry["settings"]["command"] = dep.command
            if rec.exit_code is not None:
                entry["exitCode"] = rec.exit_code
            if rec.description:
                entry["statusDescription"] = rec.description
            for key, value in (
                ("lastStartTimeUtc", rec.started_at),
                ("lastExitTimeUtc", rec.finished_at),
                ("lastRestartTimeUtc", rec.last_restart),
            ):
                if value is not None:
                    entry[key] = value.isoformat().replace("+00:00", "Z")
            out[name] = entry
        return out
