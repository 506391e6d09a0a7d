"""The edge hub: the device's local broker, route evaluation, store-and-forward, twin/method relay.

    hub = EdgeHub(EdgeHubConfig(device_id="dev1", data_dir=path), upstream=device_client)
    hub.start()
    hub.apply_desired({"routes": {...}, "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}})
    env = hub.module_env("filter")        # give these to the module's process/container
    hub.stats()                           # counters for the agent's reported properties
    hub.stop()

``upstream`` is the agent's ``DeviceClient`` (``edgefleet.sdk.device_client``) or ``None``
(everything bound upstream then waits in the store until its TTL).

With ``iothub_host`` set, the hub also serves IoT Edge's module environment for IoT Hub's SDKs
(``create_from_edge_environment``): a TLS listener in IoT Hub's module dialect and the workload
API on a unix socket of each module's own (``workload_sockets``), with a server certificate from
the device's own CA. ``module_env(m, gateway_address)`` gives a container module the address of
its network's gateway, where the hub's listeners then listen too (``container_gateways``).

The parts: ``credentials`` and ``acl`` (who may use the local broker), ``dispatch`` (routes),
``group_commit`` (into ``store_and_forward``), ``forwarder`` (out of it), ``twin_relay`` and
``method_relay`` (module twins and direct methods through ``upstream``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_agent.edgehub import acl, module_methods
from edge_agent.edgehub.answer import Answer
from edge_agent.edgehub.broker import LocalBroker
from edge_agent.edgehub.container_gateways import ContainerGateways, GatewayPorts
from edge_agent.edgehub.credentials import EdgeEndpoints, ModuleCredentials, module_env
from edge_agent.edgehub.dispatch import DEFAULT_TTL_SECS, Dispatcher
from edge_agent.edgehub.forwarder import Forwarder
from edge_agent.edgehub.group_commit import GroupCommit, Refused
from edge_agent.edgehub.method_relay import MethodRelay
from edge_agent.edgehub.routes import RouteTable
from edge_agent.edgehub.store_and_forward import MessageStore
from edge_agent.edgehub.twin_relay import TwinRelay
from edge_agent.edgehub.workload_server import HttpsServer
from edge_agent.edgehub.workload_sockets import WorkloadSockets
from edge_agent.storage_monitor import WriteEvents
from edgefleet import iothub_dialect as iothub
from edgefleet import module_topics as t
from edgefleet import protocol as p

log = logging.getLogger("edgefleet.edgehub")


@dataclass
class EdgeHubConfig:
    device_id: str
    data_dir: Path
    host: str = "127.0.0.1"  # where the local broker listens ("0.0.0.0" for containers)
    advertise_host: str | None = None  # what modules connect to (default: host)
    port: int = 0  # 0: a free port, chosen at start (see ``EdgeHub.port``)
    store_max_bytes: int = 0  # 0: no cap
    forward_window: int = 256  # messages handed to the upstream outbox ahead of its PUBACKs
    method_timeout_secs: float = 30.0
    twin_timeout_secs: float = 10.0
    # IoT Edge's module environment (None: not served): the TLS listener's address and port
    # (IoT Hub's SDKs always connect to 8883; 0 picks a free one), the gateway host name in the
    # modules' env and the server certificate (default: iothub_host), the IoT Hub host name their
    # SAS tokens name (default: the gateway host name), the directory of the modules' workload
    # API sockets (default: <data_dir>/run/modules).
    iothub_host: str | None = None
    iothub_port: int = 8883
    https_port: int = 443  # module-to-module methods of IoT Hub's SDK (it calls 443; 0: free)
    gateway_hostname: str | None = None
    iothub_hostname: str | None = None
    workload_dir: Path | None = None

    @property
    def gateway(self) -> str:
        return self.gateway_hostname or self.iothub_host or self.advertise_host or self.host

    @property
    def hub_hostname(self) -> str:
        return self.iothub_hostname or self.gateway


class EdgeHub:
    """Composes the parts and serves as the local broker's hooks."""

    def __init__(
        self, config: EdgeHubConfig, upstream: Any = None, storage_events: WriteEvents | None = None
    ) -> None:
        self.config = config
        self._upstream = upstream
        self.device_id = p.validate_id(config.device_id, "device id")
        self.dir = Path(config.data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store = MessageStore(self.dir / "store.db", config.store_max_bytes)
        self.credentials = ModuleCredentials(self.dir / "credentials.json")
        self._loop = asyncio.new_event_loop()
        self._loop_thread: threading.Thread | None = None
        self.broker = LocalBroker(self, config.host, config.port)
        self.commit = GroupCommit(self.store, self._loop, storage_events)
        self.dispatcher = Dispatcher(self.device_id, self.broker, self.commit)
        self.forwarder = Forwarder(self.store, upstream, config.forward_window, storage_events)
        self.twins = TwinRelay(
            self.device_id,
            upstream,
            self.dispatcher,
            self._loop,
            self._send_local,
            config.twin_timeout_secs,
        )
        self.methods = MethodRelay(
            self.device_id, self.broker, self._send_local, config.method_timeout_secs
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="edgehub")
        self._linked: set[str] = set()
        self._state = "stopped"
        self.workload: WorkloadSockets | None = None
        self._https_servers: list[HttpsServer] = []
        if config.iothub_host is not None:
            run = config.workload_dir or self.dir / "run" / "modules"
            self.workload = WorkloadSockets(run, self.trust_bundle, self.credentials.identity)
        self.container_gateways = ContainerGateways(self._open_container_gateway)

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def upstream(self) -> Any:
        """The upstream client the hub was built with (fixed: its parts hold it too)."""
        return self._upstream

    @property
    def port(self) -> int:
        return self.broker.port

    def start(self) -> None:
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="edgehub-loop", daemon=True
        )
        self._loop_thread.start()
        asyncio.run_coroutine_threadsafe(self.broker.start(), self._loop).result(10)
        if self.workload is not None:
            self._start_edge_environment()
        self.forwarder.start()
        for module_id in self.credentials.modules():
            self._link_module(module_id)
        self._state = "running"
        log.info("edge hub listening on %s:%s", self.config.host, self.port)

    def _start_edge_environment(self) -> None:
        """The TLS listener, the HTTPS listener and the modules' workload sockets; any of them
        failing leaves the others and the native listener."""
        cfg = self.config
        assert cfg.iothub_host is not None and self.workload is not None
        try:
            context = self._server_context()
            start = self.broker.start_iothub(cfg.iothub_host, cfg.iothub_port, context)
            port = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
            log.info("edge hub: IoT Hub module dialect on %s:%s", cfg.iothub_host, port)
        except (OSError, ssl.SSLError) as exc:
            log.warning(
                "edge hub: no IoT Hub-dialect listener on %s:%s (%s); modules on IoT Hub's SDK "
                "cannot connect",
                cfg.iothub_host,
                cfg.iothub_port,
                exc,
            )
        else:
            self._start_https(cfg.iothub_host, context)
        # the one socket of agents before per-module sockets
        (self.dir / "run" / "workload.sock").unlink(missing_ok=True)
        self.workload.start(self.credentials.modules())

    def _start_https(self, host: str, context: ssl.SSLContext) -> HttpsServer | None:
        """The HTTPS listener for module-to-module methods on ``host`` (None: not there)."""
        server = HttpsServer(host, self.config.https_port, context, self._gateway_request)
        try:
            server.start()
        except OSError as exc:
            log.warning(
                "edge hub: no HTTPS listener on %s:%s for module-to-module methods (%s)",
                host,
                self.config.https_port,
                exc,
            )
            return None
        self._https_servers.append(server)
        return server

    def _open_container_gateway(self, address: str) -> GatewayPorts:
        """The hub's listeners at a container network's gateway ``address``: the native one (on
        the main port when it is free there), and with IoT Edge's environment the TLS and HTTPS
        listeners, with a certificate naming ``address``."""
        cfg = self.config

        def listen(port: int, context: ssl.SSLContext | None = None) -> int:
            start = self.broker.listen(address, port, context)
            try:
                return asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
            except OSError as exc:
                log.debug("edge hub: cannot listen on %s:%s (%s)", address, port, exc)
                return 0

        native = listen(self.port) or listen(0)
        if not native:  # no such address here (yet)
            return GatewayPorts()
        if self.workload is None:
            return GatewayPorts(native=native)
        try:
            context = self._server_context([address], f"gateway-{address.replace(':', '_')}")
        except (OSError, ssl.SSLError) as exc:
            log.warning("edge hub: no certificate for %s (%s)", address, exc)
            return GatewayPorts(native=native)
        iothub = listen(cfg.iothub_port, context)
        if not iothub:
            log.warning(
                "edge hub: no IoT Hub-dialect listener on %s:%s; modules on IoT Hub's SDK in "
                "containers there cannot connect",
                address,
                cfg.iothub_port,
            )
            return GatewayPorts(native=native)
        https = self._start_https(address, context)
        return GatewayPorts(native, iothub, https.port if https is not None else 0)

    def _gateway_request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> Answer:
        """A module-to-module direct method of IoT Hub's module SDK (HTTPS thread)."""

        def admit(caller: str, token: str) -> bool:
            ident = iothub.IotHubIdentity(self.device_id, caller)
            connect = iothub.IotHubConnect(self.config.hub_hostname.lower(), ident, "")
            return (
                acl.admit_module_token(
                    token,
                    connect,
                    self.device_id,
                    self.config.hub_hostname,
                    self.credentials.identity,
                    time.time(),
                )
                is not None
            )

        def call(module_id: str, name: str, payload: Any, timeout: float) -> tuple[int, Any] | None:
            if not self.broker.connected(module_id):
                return None
            return self.methods.call_module(module_id, name, payload, timeout)

        return module_methods.handle(method, target, headers, body, self.device_id, admit, call)

    def _server_context(
        self, names: list[str] | None = None, cert_name: str | None = None
    ) -> ssl.SSLContext:
        """A TLS server context with a certificate of the edge CA for ``names`` (default: the
        gateway host name and address) in ``ca/<cert_name>.pem`` (default: ``ca/https.pem``)."""
        from edgefleet.ca import HubCA

        cfg = self.config
        names = names or list(dict.fromkeys([cfg.gateway, str(cfg.iothub_host)]))
        ca = HubCA(self.dir / "ca")
        if cert_name is None:
            cert, key = ca.ensure_https(names)
        else:
            files = (ca.dir / f"{cert_name}.pem", ca.dir / f"{cert_name}.key")
            cert, key = ca.ensure_server_cert(names, *files)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        return context

    def trust_bundle(self) -> str:
        """The CA of the edge hub's server certificate (PEM), for the workload API."""
        return (self.dir / "ca" / "ca.pem").read_text()

    @property
    def iothub_port(self) -> int:
        """The TLS listener's port (0 while it is not listening)."""
        return self.broker.iothub_port

    def stop(self) -> None:
        if self._state == "stopped":
            return
        self._state = "stopped"
        if self.workload is not None:
            self.workload.stop()
        for server in self._https_servers:
            server.stop()
        self._https_servers.clear()
        self.container_gateways.clear()
        self.forwarder.stop()
        if self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self.broker.stop(), self._loop)
            try:
                fut.result(5)
            except Exception:  # noqa: BLE001 - best effort on the way down
                log.debug("broker stop failed", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._loop_thread is not None:
            self._loop_thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    def status(self) -> str:
        return self._state

    # --- configuration --------------------------------------------------------------------------

    def apply_desired(self, desired: Any) -> None:
        """Install routes and storeAndForwardConfiguration from ``$edgeHub`` desired properties.

        Raises ``RouteError`` (naming the route) and keeps the previous routes when one fails.
        """
        if hasattr(desired, "model_dump"):
            # exclude_unset: a plain string route keeps IoT Edge's default (lowest) priority
            desired = desired.model_dump(exclude_unset=True, exclude_none=True)
        routes = desired.get("routes") or {}
        table = RouteTable.from_desired(routes)
        saf = desired.get("storeAndForwardConfiguration") or {}
        ttl = saf.get("timeToLiveSecs", DEFAULT_TTL_SECS)
        self.dispatcher.table = table
        self.dispatcher.default_ttl = float(ttl)
        log.info("edge hub: %d routes, store-and-forward TTL %ss", len(table.routes), ttl)

    apply = apply_desired

    def module_env(self, module_id: str, gateway_address: str | None = None) -> dict[str, str]:
        """Environment for a module: its identity, the local broker and its own credentials, and
        (IoT Edge's environment) its own workload socket, served from now on.

        ``gateway_address``: for a container module, the address its network reaches the host
        at; the hub's listeners listen there too, and the module's gateway host name and native
        listener are that address (ignored before the hub runs)."""
        p.validate_id(module_id, "module id")
        ident = self.credentials.issue(module_id)
        if self._state == "running":
            self._link_module(module_id)
        cfg = self.config
        where = EdgeEndpoints(
            host=cfg.advertise_host or cfg.host,
            port=self.port,
            gateway_hostname=cfg.gateway,
            iothub_hostname=cfg.hub_hostname,
            workload_uri=self.workload.ensure(module_id) if self.workload is not None else "",
        )
        if gateway_address and self._state == "running":
            ports = self.container_gateways.ports(gateway_address)
            where = replace(where, gateway_hostname=gateway_address)
            if ports.native:
                where = replace(where, host=gateway_address, port=ports.native)
        env = module_env(self.device_id, module_id, ident, where)
        if self.workload is None:  # no IoT Edge environment: leave its variables out
            for name in ("IOTEDGE_WORKLOADURI", "IOTEDGE_MODULEGENERATIONID", "IOTEDGE_APIVERSION"):
                env.pop(name)
        return env

    def retain_modules(self, modules: Iterable[str]) -> None:
        """The deployment's modules are ``modules``: the workload sockets of others go."""
        if self.workload is not None:
            self.workload.retain(modules)

    def stats(self) -> dict[str, Any]:
        """Store-and-forward and routing counters (for the agent's reported properties)."""
        out: dict[str, Any] = dict(self.store.stats())
        out.update(self.dispatcher.counters.stats())
        out["refusedMessages"] = self.commit.refused
        out["upstreamConnected"] = bool(self._upstream is not None and self._upstream.connected)
        return out

    def _link_module(self, module_id: str) -> None:
        """Relay desired patches and direct methods from the upstream twin to the module."""
        up = self._upstream
        if up is None or module_id in self._linked:
            return
        self._linked.add(module_id)
        channel = up.module(module_id)
        channel.on_twin_desired_properties_patch_received = self.twins.desired_handler(module_id)
        channel.on_method_request_received = self.methods.cloud_handler(module_id)

    def _send_local(self, topic: str, payload: bytes) -> None:
        """Publish to modules from any thread."""
        self._loop.call_soon_threadsafe(self.broker.publish, topic, payload, 1)

    # --- broker hooks (run in the loop thread) ---------------------------------------------------

    def authenticate(self, client_id: str, username: str | None, password: bytes | None) -> bool:
        return username is not None and acl.may_connect(self.credentials.get(username), password)

    def authenticate_iothub(
        self, client_id: str, username: str | None, password: bytes | None
    ) -> tuple[str, iothub.IotHubIdentity, float] | None:
        return acl.admit_iothub(
            username,
            client_id,
            password,
            self.device_id,
            self.config.hub_hostname,
            self.credentials.identity,
            time.time(),
        )

    def authorize(self, username: str, topic: str, write: bool) -> bool:
        return acl.may_use_topic(self.device_id, username, topic)

    def on_connection(self, username: str, connected: bool) -> None:
        log.debug("module %s %s", username, "connected" if connected else "disconnected")

    def on_publish(
        self, username: str, topic: str, payload: bytes, qos: int
    ) -> Awaitable[None] | None:
        try:
            local = t.parse_local(topic)
        except (p.ProtocolError, ValueError):
            log.warning("ignored unknown topic from %s: %s", username, topic)
            return None
        if local.kind == "telemetry":  # IoT Hub's dialect: the output rides in ``$.on``
            bag = local.bag or {}
            local = t.LocalTopic("output", local.module_id, bag.get(p.SYS_OUTPUT_NAME, ""), bag)
        if local.kind == "output":
            return self.dispatcher.module_output(username, local, payload)
        if local.kind in ("twin_get", "twin_reported"):
            self._pool.submit(self.twins.request, username, local, payload)
        elif local.kind == "method_response":
            self.methods.resolve(local.rid, (local.status or 500, payload))
        elif local.kind == "invoke":
            self._pool.submit(self.methods.invoke, username, local, payload)
        return None

    def refusal_notice(
        self, username: str, topic: str, exc: BaseException
    ) -> tuple[str, bytes] | None:
        """The notice that tells a module why its publish to ``topic`` was not stored."""
        if not isinstance(exc, Refused):
            return None
        try:
            bag = t.parse_local(topic).bag or {}
        except (p.ProtocolError, ValueError):
            bag = {}
        notice = t.refused_topic(self.device_id, username, exc.status, bag.get(p.SYS_MESSAGE_ID))
        return notice, json.dumps({"status": exc.status, "message": exc.reason}).encode()

    def on_subscribed(self, username: str) -> None:
        self.dispatcher.on_subscribed(username)
