"""The deployment worker: one background thread that assigns, steps rollouts and counts metrics.

Events (a device created, tags or properties changed, an ``$edgeAgent`` report, a configuration
written) only mark work; the thread does it in batches, so a burst of events costs one pass.
With several hub processes on one PostgreSQL, every process assigns the devices its own events
name, and the one holding the ``deployments`` lease (``cloud_hub/leases.py``) steps rollouts,
reconciles and prunes the history and counts metrics. Nothing here is lost on a crash: the
configurations, rollout states and twins are in the database, and a starting worker re-checks
every device a configuration reached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from cloud_hub import events
from cloud_hub.deployments.assigner import Assigner
from cloud_hub.deployments.history import mark_succeeded, prune_history, reconcile_successes
from cloud_hub.deployments.metrics import refresh_metrics
from cloud_hub.deployments.rollouts import RolloutStepper
from cloud_hub.deployments.store import Configurations, StoredConfiguration
from cloud_hub.deployments.targets import affected_devices
from cloud_hub.hub import Hub
from cloud_hub.leases import Lease
from cloud_hub.twin_query import Queries

log = logging.getLogger(__name__)

EDGE_AGENT = "$edgeAgent"
#: metrics wait at least this many times their last refresh's duration, so that counting a big
#: fleet takes at most about a fifth of the worker's time
METRICS_SPACING = 4.0
#: how often the stored reports are re-read for successes that no event of ours carried, and
#: the history is pruned
RECONCILE_SECS = 60.0
_Change = tuple[StoredConfiguration | None, StoredConfiguration | None]


class DeploymentWorker:
    def __init__(
        self,
        hub: Hub,
        configurations: Configurations,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self.configurations = configurations
        self.queries = Queries(hub.db)
        self.assigner = Assigner(hub.db, hub.twins, hub.registry, hub.events)
        self.stepper = RolloutStepper(hub.db, configurations, clock)
        # rollout steps, history housekeeping and metrics sweep the fleet: one process does them
        self.lease = Lease(hub.db, "deployments")
        self.tick = hub.settings.deployment_tick_secs
        self.metrics_interval = hub.settings.metrics_interval_secs
        self._wake = threading.Condition()
        self._devices: set[str] = set()
        self._changes: list[_Change] = []
        self._reports: dict[str, dict[str, Any]] = {}
        self._metrics_due = True
        self._metrics_at = 0.0
        self._reconciled_at = -RECONCILE_SECS
        self._metrics_cost = 0.0
        self._condition_reads_properties = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ marking work
    def device_changed(self, device_id: str) -> None:
        with self._wake:
            self._devices.add(device_id)
            self._wake.notify()

    def devices_changed(self, device_ids: set[str]) -> None:
        with self._wake:
            self._devices |= device_ids
            self._wake.notify()

    def configuration_changed(
        self, before: StoredConfiguration | None, after: StoredConfiguration | None
    ) -> None:
        with self._wake:
            self._changes.append((before, after))
            self._metrics_due = True
            self._wake.notify()

    def _on_event(self, event: Any) -> None:
        if isinstance(event, events.DeviceCreated | events.DeviceUpdated):
            self.device_changed(event.device_id)
        elif isinstance(event, events.TwinTagsChanged) and event.module_id is None:
            self.device_changed(event.device_id)
        elif isinstance(event, events.TwinReportedChanged | events.TwinDesiredChanged):
            if event.module_id is None and self._condition_reads_properties:
                self.device_changed(event.device_id)
            if isinstance(event, events.TwinReportedChanged) and event.module_id == EDGE_AGENT:
                with self._wake:
                    self._reports[event.device_id] = event.patch
                    self._metrics_due = True

    # ------------------------------------------------------------------ lifecycle
    def subscribe(self) -> None:
        bus = self.hub.events
        for kind in (
            events.DeviceCreated,
            events.DeviceUpdated,
            events.TwinTagsChanged,
            events.TwinReportedChanged,
            events.TwinDesiredChanged,
        ):
            self._unsubscribe.append(bus.subscribe(kind, self._on_event))

    async def start(self) -> None:
        self.subscribe()
        for config in self.configurations.all():  # a restart re-checks what each one reached
            self.configuration_changed(None, config)
        self._thread = threading.Thread(target=self._loop, name="deployments", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self.lease.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a database hiccup: the work stays marked, retried next tick
                log.exception("deployment pass failed")
            with self._wake:
                if not (self._devices or self._changes) and not self._stop.is_set():
                    self._wake.wait(self.tick)

    # ------------------------------------------------------------------ one pass
    def run_once(self, *, metrics_now: bool = False) -> None:
        """Do the marked work, step rollouts and refresh due metrics (``metrics_now``: whatever
        their spacing; tests call this)."""
        with self._wake:
            devices, self._devices = self._devices, set()
            changes, self._changes = self._changes, []
            reports, self._reports = self._reports, {}
        try:
            for before, after in changes:
                devices |= affected_devices(self.queries, before, after)
            configs = self.configurations.all()
            self._condition_reads_properties = any(
                "properties." in c.target_condition for c in configs
            )
            leading = self.lease.held()
            stepped = self.stepper.step_all(configs) if leading else set()
            if stepped or any(c.rollout is not None for c in configs):
                configs = self.configurations.all()
            devices |= stepped
            if devices and self.assigner.assign(devices, configs):
                self._metrics_due = True
        except Exception:
            with self._wake:  # keep the work for the next pass
                self._devices |= devices
                self._changes = changes + self._changes
            raise
        for device_id, patch in reports.items():
            mark_succeeded(self.hub.db, device_id, patch)
        now = time.monotonic()
        if not leading:
            return
        if now - self._reconciled_at >= RECONCILE_SECS:
            self._reconciled_at = now
            reconcile_successes(self.hub.db)
            prune_history(self.hub.db)
        spacing = max(self.metrics_interval, self._metrics_cost * METRICS_SPACING)
        if metrics_now or (self._metrics_due and now - self._metrics_at >= spacing):
            self._metrics_due = False
            self._metrics_at = now
            refresh_metrics(self.configurations, self.queries, configs)
            self._metrics_cost = time.monotonic() - now
