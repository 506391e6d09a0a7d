"""Keeps the modules of the desired ``$edgeAgent`` deployment running: the thin loop around
the planner (``edge_agent.planner`` decides) and the plan runner (``edge_agent.plan_runner``
acts).

Every ``interval`` seconds (or at once when the desired state changes) a pass observes the
runtimes, asks the planner for a plan at ``now = clock()``, runs it and folds each module's
outcome into its restart record. With a ``RestartStateStore`` the records are saved on every
change (at once after a restart: a crash right after it must not lose the count) and loaded at
start, so an agent restart neither revives a ``failed`` module nor restarts a crash loop's
counter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from edge_agent.plan_runner import Outcome, PlanRunner
from edge_agent.planner import (
    DesiredModule,
    Plan,
    Policy,
    Restart,
    RestartRecord,
    after_run,
    observed,
    plan,
    restarted_by_operator,
)
from edge_agent.restart_state import RestartStateStore, entry_of, record_of
from edge_agent.runtime.base import ModuleSpec, Runtime
from edgefleet.manifest import EdgeAgentDesired, Module
from edgefleet.utctime import utc_now

log = logging.getLogger("edgefleet.agent.reconciler")

__all__ = ["EnvProvider", "Policy", "Reconciler", "module_spec"]

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
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.runtimes = runtimes
        self.policy = policy or Policy()
        self.env_provider = env_provider
        self.on_change = on_change
        self.clock = clock  # aware UTC; the planner's ``now``
        self.desired: EdgeAgentDesired | None = None
        self.records: dict[str, RestartRecord] = {}
        self.runner = PlanRunner(runtimes)
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._last_report: dict[str, Any] | None = None
        self._last_gc = time.monotonic()
        self.passes = 0
        self.state = state
        if state is not None:
            self._load_state(state)

    # ------------------------------------------------------------------ saved restart state
    def _load_state(self, state: RestartStateStore) -> None:
        now = self.clock()
        for name, entry in state.load().items():
            try:
                self.records[name] = record_of(entry, self.policy.backoff_max, now)
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
        self.state.save({n: entry_of(r) for n, r in list(self.records.items())})

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
        """One pass: observe, plan, run the plan, save and report what changed."""
        with self._lock:
            if self.desired is None:  # no deployment known yet: touch nothing
                return Plan()
            specs = self.specs()
            desired = {
                name: DesiredModule(spec, mod.status, mod.restartPolicy, mod.startupOrder)
                for name, (mod, spec) in specs.items()
            }
            current = {kind: rt.modules() for kind, rt in self.runtimes.items()}
            creds = self.desired.runtime.settings.registryCredentials
            pass_plan = plan(desired, current, self.records, self.policy, self.clock(), creds)
            for module in pass_plan.modules:
                if not module.commands:
                    self.records[module.module] = module.record
            self.runner.run(pass_plan, lambda outcome: self._settle(pass_plan, outcome))
            if time.monotonic() - self._last_gc >= self.policy.gc_interval:
                self._last_gc = time.monotonic()
                self._gc(specs)
            self.passes += 1
            self._persist()
        self._notify()
        return pass_plan

    def _settle(self, pass_plan: Plan, outcome: Outcome) -> None:
        """Fold one module's outcome into its record (runs in the runner's worker thread)."""
        if outcome.failed_at is not None:
            log.warning("module %s: %s", outcome.module, outcome.error)
        module = next(
            (
                m
                for m in pass_plan.modules
                if m.module == outcome.module and m.commands == outcome.commands
            ),
            None,
        )
        if module is None:  # the removal of a module no longer desired (or on another runtime)
            return
        self.records[module.module] = after_run(
            module, outcome.failed_at, outcome.error, outcome.state
        )
        if outcome.failed_at is None and any(isinstance(c, Restart) for c in module.commands):
            self._persist()  # at once: a crash right after a restart must not lose the count

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

    # ------------------------------------------------------------------ commands
    def restart_module(self, name: str) -> None:
        """``restartModule``: stop and start now; raises KeyError for a module not here."""
        with self._lock:
            if self.desired is None or name not in self.desired.modules:
                raise KeyError(name)
            kind = self.desired.modules[name].type
            rt = self.runtimes.get(kind)
            if rt is None or rt.status(name) is None:
                raise KeyError(name)
            self.runner.execute(Restart(name, kind, self.policy.stop_timeout))
            rec = restarted_by_operator(self.records.get(name, RestartRecord()), self.clock())
            self.records[name] = observed(rec, rt.status(name))
            self._persist()
        self._notify()

    def runtime_for(self, name: str) -> Runtime | None:
        if self.desired is None or name not in self.desired.modules:
            return None
        return self.runtimes.get(self.desired.modules[name].type)

    def shutdown(self, stop_modules: bool) -> None:
        self.runner.shutdown()
        for rt in self.runtimes.values():
            rt.shutdown(stop_modules)

    # ------------------------------------------------------------------ report
    def report_modules(self) -> dict[str, Any]:
        """``modules`` of the $edgeAgent reported properties, in IoT Edge's shape."""
        out: dict[str, Any] = {}
        if self.desired is None:
            return out
        for name, mod in self.desired.modules.items():
            rec = self.records.get(name, RestartRecord())
            dep = rec.deployed or module_spec(name, mod)
            settings: dict[str, Any] = {"imageHash": rec.image_hash}
            if mod.type == "docker":
                settings["image"] = dep.image
            else:
                settings["command"] = dep.command
            out[name] = {
                "type": mod.type,
                "version": dep.version,
                "status": mod.status,
                "restartPolicy": mod.restartPolicy,
                **rec.reported(),
                "settings": settings,
            }
        return out
