"""The agent daemon: twin sync, reconciling, reported properties, built-in methods.

Boot: the last applied deployment (data dir) is applied at once, so modules come back after a
reboot even when the hub is unreachable; the twin's desired state replaces it when the hub
answers. A desired change is validated (IoT Edge codes in ``lastDesiredStatus``), persisted and
handed to the reconciler. Reported properties are recomputed on every change and sent debounced.
"""

from __future__ import annotations

import logging
import platform
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from edge_agent.create_options_policy import CreateOptionsPolicy, deployment_violations
from edge_agent.deployment_file import DeploymentStore
from edge_agent.methods import BuiltinMethods
from edge_agent.reconciler import Reconciler
from edge_agent.storage_monitor import StorageMonitor
from edge_agent.twin_channel import TwinChannel
from edgefleet import __version__
from edgefleet.diskfull import is_disk_full
from edgefleet.manifest import (
    EdgeAgentDesired,
    EdgeHubDesired,
    ManifestError,
    Module,
    parse_edge_agent,
    parse_edge_hub,
)
from edgefleet.utctime import utc_text

log = logging.getLogger("edgefleet.agent")


class EdgeHubService(Protocol):
    """The seam to the in-agent edge hub."""

    def apply(self, desired: EdgeHubDesired) -> None: ...

    def module_env(self, module: str, gateway_address: str | None = None) -> dict[str, str]: ...

    def retain_modules(self, modules: Iterable[str]) -> None: ...

    def status(self) -> str: ...

    def stop(self) -> None: ...


DEPLOYMENT_WRITER = "deployment"
STATS_REFRESH_SECS = 60.0  # edge hub counters change with every message: report them slowly
# ... except those that count messages dropped on the device: looked at this often, and a
# change is reported at once (the hub is the only place an operator sees the loss)
LOSS_CHECK_SECS = 2.0
LOSS_COUNTERS = ("evictedMessages", "expiredMessages")
REPORT_PERIOD_SECS = 30.0


def dropped_changed(reported: dict[str, Any] | None, current: dict[str, Any]) -> bool:
    """Whether the edge hub dropped messages (evicted, expired) since ``reported``."""
    if reported is None:
        return True
    return any(reported.get(name) != current.get(name) for name in LOSS_COUNTERS)


# a container module's createOptions -> the address it reaches the edge hub at (None: as a process)
ContainerGateway = Callable[[Mapping[str, Any]], str | None]


class Agent:
    def __init__(
        self,
        device_id: str,
        channel: TwinChannel,
        reconciler: Reconciler,
        store: DeploymentStore,
        runtime_type: str,
        hostname: str | None = None,
        debounce: float = 1.0,
        edge_hub_factory: Callable[[Agent], EdgeHubService | None] | None = None,
        hub_hostname: str = "",
        storage: StorageMonitor | None = None,
        create_options_policy: CreateOptionsPolicy | None = None,
        container_gateway: ContainerGateway | None = None,
    ) -> None:
        self.device_id = device_id
        self.channel = channel
        self.reconciler = reconciler
        self.store = store
        self.runtime_type = runtime_type
        self.hostname = hostname or socket.gethostname()
        self.hub_hostname = hub_hostname
        self.debounce = debounce
        self.methods = BuiltinMethods(reconciler, device_id)
        self.edge_hub_factory = edge_hub_factory
        self.edge_hub: EdgeHubService | None = None
        self.storage = storage
        self.create_options_policy = create_options_policy or CreateOptionsPolicy()
        self.container_gateway = container_gateway
        self.started_at = datetime.now(UTC)
        self.last_desired_version: int | None = None
        self.last_desired_status: dict[str, Any] = {"code": 200, "description": ""}
        self.hub_desired: EdgeHubDesired | None = None
        self._seen_versions: tuple[Any, Any] | None = None
        self._hub_stats: dict[str, Any] | None = None
        self._hub_stats_at = 0.0
        self._stop = threading.Event()
        self._report_due = threading.Event()
        self._sync_due = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_reported: dict[str, Any] = {}
        self._reported_modules: set[str] = set()
        self.reconciler.on_change = self._report_due.set
        if storage is not None:
            storage.on_change = self._storage_changed
        self.reconciler.env_provider = self.module_env

    # ------------------------------------------------------------------ env for modules
    def module_env(self, name: str, mod: Module) -> dict[str, str]:
        env = {
            "IOTEDGE_DEVICEID": self.device_id,
            "IOTEDGE_MODULEID": name,
            "IOTEDGE_GATEWAYHOSTNAME": self.hostname,
            "IOTEDGE_IOTHUBHOSTNAME": self.hub_hostname,
        }
        if self.edge_hub is not None:
            gateway = None
            if mod.type == "docker" and self.container_gateway is not None:
                gateway = self.container_gateway(mod.settings.create_options())
            env.update(self.edge_hub.module_env(name, gateway))
        return env

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        saved = self.store.load()
        if saved:
            try:
                agent = parse_edge_agent(saved["edgeAgent"])
                hub = parse_edge_hub(saved["edgeHub"]) if saved.get("edgeHub") else None
                self.last_desired_version = saved.get("version")
                self._activate(agent, hub, persist=None)
                log.info("started from the persisted deployment (version %s)", saved["version"])
            except ManifestError as exc:
                log.warning("persisted deployment unusable: %s", exc)
        if self.edge_hub_factory is not None:
            # the factory installs ``hub_desired`` (the saved routes) before the hub listens
            self.edge_hub = self.edge_hub_factory(self)
        if self.reconciler.desired is not None:
            self._retain_modules(self.reconciler.desired)
            self.reconciler.adopt()
        self.channel.start(on_desired=lambda _m: self._sync_due.set(), on_method=self.on_method)
        self._sync_due.set()
        loops: list[tuple[Callable[[], None], str]] = [
            (lambda: self.reconciler.run(self._stop), "reconcile"),
            (self._sync_loop, "twin-sync"),
            (self._report_loop, "report"),
        ]
        if self.storage is not None:
            loops.append((partial(self.storage.run, self._stop), "storage"))
        for target, name in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, stop_modules: bool = False) -> None:
        self._stop.set()
        self._sync_due.set()
        self._report_due.set()
        self.reconciler.wake()
        for t in self._threads:
            t.join(30)
        try:
            self._send_report(force=True)
        except Exception:  # best effort on the way out
            log.debug("final report failed", exc_info=True)
        self.channel.close()
        if self.edge_hub is not None:
            self.edge_hub.stop()
        self.reconciler.shutdown(stop_modules)

    def wait(self) -> None:
        while not self._stop.wait(1):
            pass

    # ------------------------------------------------------------------ desired state
    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            self._sync_due.wait(30)  # also re-read now and then: a lost push heals itself
            if self._stop.is_set():
                return
            self._sync_due.clear()
            try:
                self.sync_once()
            except Exception:
                log.exception("twin sync failed")

    def sync_once(self) -> None:
        agent_raw = self.channel.get_desired("$edgeAgent", timeout=10)
        if agent_raw is None:
            return  # hub unreachable: keep running what we have
        hub_raw = self.channel.get_desired("$edgeHub", timeout=10)
        version = agent_raw.get("$version")
        seen = (version, (hub_raw or {}).get("$version"))
        if seen == self._seen_versions and self.last_desired_status["code"] == 200:
            return
        self._seen_versions = seen
        self.apply_desired(agent_raw, hub_raw, version)

    def apply_desired(
        self, agent_raw: dict[str, Any], hub_raw: dict[str, Any] | None, version: int | None
    ) -> None:
        self.last_desired_version = version
        try:
            if "$invalid" in agent_raw:
                raise ManifestError(400, str(agent_raw["$invalid"]))
            agent = parse_edge_agent(agent_raw)
            hub = None
            if hub_raw and any(not k.startswith("$") for k in hub_raw):
                hub = parse_edge_hub(hub_raw)
        except ManifestError as exc:
            log.warning("desired deployment rejected (%s): %s", exc.code, exc.description)
            self.last_desired_status = {"code": exc.code, "description": exc.description}
            self._report_due.set()
            return
        clean_hub = {k: v for k, v in (hub_raw or {}).items() if not k.startswith("$")} or None
        clean_agent = {k: v for k, v in agent_raw.items() if not k.startswith("$")}
        try:
            self._activate(agent, hub, persist=(clean_agent, clean_hub))
        except ManifestError as exc:
            log.warning("desired deployment rejected (%s): %s", exc.code, exc.description)
            self.last_desired_status = {"code": exc.code, "description": exc.description}
        except Exception as exc:  # storage trouble and the like: IoT Edge's 500
            if is_disk_full(exc):
                log.warning("deployment not saved, refused until there is space: %s", exc)
            else:
                log.exception("applying the deployment failed")
            self.last_desired_status = {"code": 500, "description": str(exc)}
        else:
            self.last_desired_status = {"code": 200, "description": ""}
        self._report_due.set()

    def _activate(
        self,
        agent: EdgeAgentDesired,
        hub: EdgeHubDesired | None,
        persist: tuple[dict[str, Any], dict[str, Any] | None] | None,
    ) -> None:
        self._check_create_options(agent)
        if hub is not None and self.edge_hub is not None:
            try:
                self.edge_hub.apply(hub)  # validates the routes: a bad one rejects the whole
            except Exception as exc:
                raise ManifestError(400, str(exc), "$edgeHub.properties.desired.routes") from None
        if persist is not None:
            try:
                self.store.save(persist[0], persist[1], self.last_desired_version)
            except OSError as exc:  # a full disk: refused (500), retried by the next sync
                if self.storage is not None:
                    self.storage.failed(DEPLOYMENT_WRITER, exc)
                raise
            if self.storage is not None:
                self.storage.succeeded(DEPLOYMENT_WRITER)
        self.hub_desired = hub
        self.reconciler.set_desired(agent)
        self._retain_modules(agent)

    def _retain_modules(self, agent: EdgeAgentDesired) -> None:
        """Let the edge hub drop what it keeps for modules no longer deployed (after
        ``set_desired``: a reconcile pass then no longer asks for them)."""
        if self.edge_hub is not None:
            self.edge_hub.retain_modules(agent.modules)

    def _check_create_options(self, agent: EdgeAgentDesired) -> None:
        """Refuse (400) a deployment whose docker modules ask for more than the operator allows."""
        docker = {
            name: mod.settings.create_options()
            for name, mod in agent.modules.items()
            if mod.type == "docker"
        }
        refused = deployment_violations(docker, self.create_options_policy)
        if refused:
            raise ManifestError(
                400, "refused by this device's create_options_policy: " + "; ".join(refused)
            )

    def _storage_changed(self) -> None:
        """Report it; a deployment refused for lack of space is tried again at once."""
        self._report_due.set()
        if self.last_desired_status.get("code") == 500:
            self._sync_due.set()

    # ------------------------------------------------------------------ methods
    def on_method(self, name: str, payload: Any) -> tuple[int, Any]:
        return self.methods.handle(name, payload)

    # ------------------------------------------------------------------ reported
    def _report_loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            due = self._report_due.wait(LOSS_CHECK_SECS)
            if self._stop.is_set():
                return
            periodic = time.monotonic() - last >= REPORT_PERIOD_SECS
            if not (due or periodic or self._hub_dropped()):
                continue
            last = time.monotonic()
            time.sleep(self.debounce)  # debounce: bursts of changes become one patch
            self._report_due.clear()
            try:
                self._send_report()
            except Exception:
                log.exception("reporting failed")

    def reported(self) -> dict[str, Any]:
        desired = self.reconciler.desired
        modules = self.reconciler.report_modules()
        edge_hub_status = self.edge_hub.status() if self.edge_hub is not None else "stopped"
        system: dict[str, Any] = {
            "edgeAgent": {
                "runtimeStatus": "running",
                "lastStartTimeUtc": utc_text(self.started_at),
                "type": "process",
                "settings": {"command": ["edgefleet", "agent", "run"]},
            },
            "edgeHub": {
                "runtimeStatus": edge_hub_status,
                "type": "in-process",
                "settings": {},
            },
        }
        stats = self._edge_hub_stats()
        if stats is not None:
            system["edgeHub"]["storeAndForward"] = stats
        if desired is not None:
            system["edgeAgent"]["settings"]["image"] = (
                desired.systemModules.edgeAgent.settings.image
            )
        report = {
            "schemaVersion": "1.1",
            "version": {"version": __version__, "build": "", "commit": ""},
            "lastDesiredVersion": self.last_desired_version,
            "lastDesiredStatus": self.last_desired_status,
            "runtime": {
                "type": self.runtime_type,
                "platform": {
                    "os": platform.system().lower(),
                    "architecture": platform.machine(),
                    "version": platform.release(),
                },
            },
            "systemModules": system,
            "modules": modules,
        }
        if self.storage is not None:
            report["storage"] = self.storage.reported()
        return report

    def _fresh_hub_stats(self) -> dict[str, Any] | None:
        stats_fn = getattr(self.edge_hub, "stats", None)
        if stats_fn is None:
            return None
        try:
            return dict(stats_fn())
        except Exception:  # a stats hiccup must not stop reporting
            log.debug("edge hub stats failed", exc_info=True)
            return None

    def _hub_dropped(self) -> bool:
        """The edge hub dropped messages since the counters last reported."""
        current = self._fresh_hub_stats()
        return current is not None and dropped_changed(self._hub_stats, current)

    def _edge_hub_stats(self) -> dict[str, Any] | None:
        """The edge hub's queue and routing counters, refreshed at most every minute, or at
        once when it dropped messages."""
        if getattr(self.edge_hub, "stats", None) is None:
            return None
        now = time.monotonic()
        current = self._fresh_hub_stats()
        stale = self._hub_stats is None or now - self._hub_stats_at >= STATS_REFRESH_SECS
        if current is not None and (stale or dropped_changed(self._hub_stats, current)):
            self._hub_stats = current
            self._hub_stats_at = now
        return self._hub_stats

    def _send_report(self, force: bool = False) -> None:
        report = self.reported()
        if report == self._last_reported and not force:
            return
        patch = dict(report)
        gone = self._reported_modules - set(report["modules"])
        patch["modules"] = {**report["modules"], **{m: None for m in gone}}
        if self.channel.report(patch):
            self._last_reported = report
            self._reported_modules = set(report["modules"])
        else:  # hub unreachable: retry a little later (the latest state, not a backlog)
            self._stop.wait(5)
            self._report_due.set()
