"""The edge hub: the device's local broker, route evaluation, store-and-forward, twin/method relay.

    hub = EdgeHub(EdgeHubConfig(device_id="dev1", data_dir=path), upstream=device_client)
    hub.start()
    hub.apply_desired({"routes": {...}, "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}})
    env = hub.module_env("filter")        # give these to the module's process/container
    hub.stats()                           # counters for the agent's reported properties
    hub.stop()

``upstream`` is the agent's ``DeviceClient`` (``edgefleet.sdk.device_client``) or ``None``
(everything bound upstream then waits in the store until its TTL).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.edgehub import twin_notify
from edge_agent.edgehub.broker import LocalBroker
from edge_agent.edgehub.routes import RouteMessage, RouteTable, module_source
from edge_agent.edgehub.store_and_forward import Item, MessageStore
from edgefleet import module_topics as t
from edgefleet import protocol as p

log = logging.getLogger("edgefleet.edgehub")

DEFAULT_TTL_SECS = 7200
MAX_HELD = 10_000  # messages kept per module until it first subscribes


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


@dataclass
class _Counters:
    routed: int = 0
    to_modules: int = 0
    unrouted: int = 0
    oversized: int = 0
    twin_changes: int = 0


class EdgeHub:
    def __init__(self, config: EdgeHubConfig, upstream: Any = None) -> None:
        self.config = config
        self.upstream = upstream
        self.device_id = p.validate_id(config.device_id, "device id")
        self.dir = Path(config.data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store = MessageStore(self.dir / "store.db", config.store_max_bytes)
        self.table = RouteTable()
        self.default_ttl: float = DEFAULT_TTL_SECS
        self.counters = _Counters()
        self._creds_path = self.dir / "credentials.json"
        self._creds: dict[str, str] = self._load_creds()
        self._loop = asyncio.new_event_loop()
        self._loop_thread: threading.Thread | None = None
        self.broker = LocalBroker(self, config.host, config.port)
        self._pending: list[tuple[Item, asyncio.Future[None]]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="edgehub")
        self._waiters: dict[str, tuple[threading.Event, list[Any]]] = {}
        self._lock = threading.Lock()
        self._linked: set[str] = set()
        self._held: dict[str, deque[tuple[str, bytes]]] = {}
        self._state = "stopped"
        self._online = False

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.broker.port

    def start(self) -> None:
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="edgehub-loop", daemon=True
        )
        self._loop_thread.start()
        asyncio.run_coroutine_threadsafe(self.broker.start(), self._loop).result(10)
        forwarder = threading.Thread(target=self._forward_loop, name="edgehub-fwd", daemon=True)
        forwarder.start()
        self._threads.append(forwarder)
        for module_id in list(self._creds):
            self._link_module(module_id)
        self._state = "running"
        log.info("edge hub listening on %s:%s", self.config.host, self.port)

    def stop(self) -> None:
        if self._state == "stopped":
            return
        self._state = "stopped"
        self._stop.set()
        with self.store.changed:
            self.store.changed.notify_all()
        for thread in self._threads:
            thread.join(5)
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
        self.table = table
        self.default_ttl = float(ttl)
        log.info("edge hub: %d routes, store-and-forward TTL %ss", len(table.routes), ttl)

    apply = apply_desired

    def module_env(self, module_id: str) -> dict[str, str]:
        """Environment for a module: its identity, the local broker and its own credentials."""
        p.validate_id(module_id, "module id")
        with self._lock:
            password = self._creds.get(module_id)
            if password is None:
                password = secrets.token_urlsafe(24)
                self._creds[module_id] = password
                self._save_creds()
        if self._state == "running":
            self._link_module(module_id)
        host = self.config.advertise_host or self.config.host
        conn = (
            f"HostName={host};GatewayHostName={host};Port={self.port};"
            f"DeviceId={self.device_id};ModuleId={module_id};SharedAccessKey={password}"
        )
        return {
            "IOTEDGE_DEVICEID": self.device_id,
            "IOTEDGE_MODULEID": module_id,
            "IOTEDGE_GATEWAYHOSTNAME": host,
            "IOTEDGE_EDGEHUBPORT": str(self.port),
            "IOTEDGE_MODULEKEY": password,
            "EdgeHubConnectionString": conn,
        }

    def stats(self) -> dict[str, Any]:
        """Store-and-forward and routing counters (for the agent's reported properties)."""
        out: dict[str, Any] = dict(self.store.stats())
        out.update(
            routedMessages=self.counters.routed,
            moduleDeliveries=self.counters.to_modules,
            unroutedMessages=self.counters.unrouted,
            oversizedMessages=self.counters.oversized,
            twinChangeNotifications=self.counters.twin_changes,
            upstreamConnected=bool(self.upstream is not None and self.upstream.connected),
        )
        return out

    def _load_creds(self) -> dict[str, str]:
        try:
            data = json.loads(self._creds_path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save_creds(self) -> None:
        tmp = self._creds_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._creds, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._creds_path)

    # --- broker hooks (run in the loop thread) ---------------------------------------------------

    def authenticate(self, client_id: str, username: str | None, password: bytes | None) -> bool:
        if username is None or password is None:
            return False
        expected = self._creds.get(username)
        return expected is not None and hmac.compare_digest(expected.encode(), password)

    def authorize(self, username: str, topic: str, write: bool) -> bool:
        return topic.startswith(t.acl_prefix(self.device_id, username))

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
        if local.kind == "output":
            return self._on_output(username, local, payload)
        if local.kind in ("twin_get", "twin_reported"):
            self._pool.submit(self._twin_request, username, local, payload)
        elif local.kind == "method_response":
            self._resolve(local.rid, (local.status or 500, payload))
        elif local.kind == "invoke":
            self._pool.submit(self._invoke, username, local, payload)
        return None

    def _on_output(
        self, module_id: str, local: t.LocalTopic, payload: bytes
    ) -> Awaitable[None] | None:
        if len(payload) > p.MAX_MESSAGE_BYTES:  # the hub would refuse it: never store it
            log.warning(
                "dropped a %d-byte message from %s (limit 256 KiB)", len(payload), module_id
            )
            self.counters.oversized += 1
            return None
        bag = dict(local.bag or {})
        bag[p.SYS_OUTPUT_NAME] = local.name
        bag[p.SYS_CONNECTION_DEVICE_ID] = self.device_id
        bag[p.SYS_CONNECTION_MODULE_ID] = module_id
        msg = p.Message.from_property_bag(payload, bag)
        system = {
            "messageId": msg.message_id or None,
            "correlationId": msg.correlation_id,
            "contentType": msg.content_type,
            "contentEncoding": msg.content_encoding,
            "connectionDeviceId": self.device_id,
            "connectionModuleId": module_id,
            "outputName": local.name,
            "userId": msg.user_id,
            "to": msg.to,
            "creationTime": msg.creation_time,
        }
        route_msg = RouteMessage(
            module_source(module_id, local.name),
            payload,
            msg.custom_properties,
            {k: v for k, v in system.items() if v is not None},
        )
        return self._route(module_id, route_msg, bag, payload)

    def _route(
        self, module_id: str, route_msg: RouteMessage, bag: dict[str, str], payload: bytes
    ) -> asyncio.Future[None] | None:
        """Deliver to every matching endpoint; the future resolves once stored for upstream."""
        results = self.table.evaluate(route_msg)
        if not results:
            self.counters.unrouted += 1
            return None
        self.counters.routed += 1
        future: asyncio.Future[None] | None = None
        for result in results:
            sink = result.sink
            if sink.type == "system":
                ttl = result.ttl_secs or self.default_ttl
                item = Item(module_id, p.encode_property_bag(bag), payload, result.priority, ttl)
                future = self._loop.create_future()
                if not self._pending:
                    self._loop.call_soon(self._flush)
                self._pending.append((item, future))
            elif sink.module and sink.input:
                in_bag = dict(bag)
                in_bag[p.SYS_INPUT_NAME] = sink.input
                topic = t.input_topic(self.device_id, sink.module, sink.input, in_bag)
                if not self.broker.publish(topic, payload, 1):
                    self._hold(sink.module, topic, payload)
                self.counters.to_modules += 1
        return future

    def _hold(self, module_id: str, topic: str, payload: bytes) -> None:
        """Keep a message for a module that has not subscribed yet (bounded, oldest dropped)."""
        queue = self._held.setdefault(module_id, deque(maxlen=MAX_HELD))
        queue.append((topic, payload))

    def on_subscribed(self, username: str) -> None:
        queue = self._held.pop(username, None)
        while queue:
            topic, payload = queue.popleft()
            if not self.broker.publish(topic, payload, 1):
                self._hold(username, topic, payload)
                return

    def _flush(self) -> None:
        """Group commit: every upstream message that arrived in this loop turn, one transaction."""
        pending, self._pending = self._pending, []
        try:
            self.store.put_many([item for item, _ in pending])
        except Exception as exc:  # noqa: BLE001 - no PUBACK; the module resends
            for _, fut in pending:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for _, fut in pending:
            if not fut.done():
                fut.set_result(None)

    # --- forwarding upstream ------------------------------------------------------------------

    def _forward_loop(self) -> None:
        last_expiry = 0.0
        while not self._stop.is_set():
            now = time.time()
            if now - last_expiry >= 1.0:
                last_expiry = now
                try:
                    self.store.expire(now)
                except Exception:  # noqa: BLE001
                    log.exception("expiring stored messages failed")
            up = self.upstream
            online = up is not None and bool(up.connected)
            if online != self._online:
                self._online = online
                log.info("upstream %s", "reachable" if online else "unreachable")
            if not online:
                self._stop.wait(0.1)
                continue
            room = self.config.forward_window - len(up.outbox)
            if room <= 0:
                self._stop.wait(0.005)
                continue
            batch = [s for s in self.store.peek(room) if s.expires > now]
            if not batch:
                self.store.wait(0.2)
                continue
            try:
                self._hand_over(up, batch)
            except Exception:  # noqa: BLE001 - stays in the store; retried
                log.exception("handing messages to the upstream client failed")
                self._stop.wait(0.5)

    def _hand_over(self, up: Any, batch: list[Any]) -> None:
        """Move a batch into the upstream client's durable outbox, keeping the order."""
        run: list[p.Message] = []
        run_module = None
        for stored in batch:
            if stored.module != run_module and run:
                up.module(run_module).send_messages(run)
                run = []
            run_module = stored.module
            bag = p.decode_property_bag(stored.bag)
            run.append(p.Message.from_property_bag(stored.payload, bag))
        if run:
            up.module(run_module).send_messages(run)
        self.store.remove([s.seq for s in batch])

    # --- twins and methods ----------------------------------------------------------------------

    def _send_local(self, topic: str, payload: bytes) -> None:
        self._loop.call_soon_threadsafe(self.broker.publish, topic, payload, 1)

    def _link_module(self, module_id: str) -> None:
        """Relay desired patches and direct methods from the upstream twin to the module."""
        up = self.upstream
        if up is None or module_id in self._linked:
            return
        self._linked.add(module_id)
        channel = up.module(module_id)

        def on_desired(patch: dict[str, Any]) -> None:
            version = int(patch.get("$version", 0) or 0)
            self._send_local(
                p.twin_desired_topic(self.device_id, version, module_id), json.dumps(patch).encode()
            )

        def on_method(request: Any) -> Any:
            from edgefleet.sdk.device_client import MethodResponse

            status, body = self._call_module(module_id, request.name, request.payload)
            return MethodResponse.create_from_method_request(request, status, body)

        channel.on_twin_desired_properties_patch_received = on_desired
        channel.on_method_request_received = on_method

    def _twin_request(self, module_id: str, local: t.LocalTopic, payload: bytes) -> None:
        rid = local.rid or ""
        status, body, version = 200, b"", None
        up = self.upstream
        try:
            if up is None or not up.connected:
                status, body = 503, b'{"message": "upstream unreachable"}'
            elif local.kind == "twin_get":
                twin = up.module(module_id).get_twin(timeout=self.config.twin_timeout_secs)
                body = json.dumps(twin).encode()
            else:
                patch = json.loads(payload or b"{}")
                version = up.module(module_id).patch_twin_reported_properties(
                    patch, timeout=self.config.twin_timeout_secs
                )
                status = 204
                if isinstance(patch, dict):
                    self._notify_twin_change(module_id, patch, version)
        except ValueError:
            status, body = 400, b'{"message": "reported patch is not JSON"}'
        except Exception as exc:  # noqa: BLE001 - ClientError/TimeoutError from upstream
            status = int(getattr(exc, "status", None) or 504)
            body = json.dumps({"message": str(exc)}).encode()
        topic = p.twin_response_topic(self.device_id, status, rid, version, module_id)
        self._send_local(topic, body)

    def _notify_twin_change(self, module_id: str, patch: dict[str, Any], version: int) -> None:
        """Route the /twinChangeNotifications message of an accepted reported patch.

        Runs in a pool thread; returns once the notification is delivered or, for $upstream,
        committed to the store, so the module's 204 follows a durable notification.
        """
        change = twin_notify.reported_change(self.device_id, module_id, patch, version)
        if len(change.body) > p.MAX_MESSAGE_BYTES:
            log.warning("dropped a %d-byte twin change notification", len(change.body))
            self.counters.oversized += 1
            return

        async def route() -> None:
            self.counters.twin_changes += 1
            future = self._route(module_id, change.route_message, change.bag, change.body)
            if future is not None:
                await future

        try:
            asyncio.run_coroutine_threadsafe(route(), self._loop).result(
                self.config.twin_timeout_secs
            )
        except Exception:  # noqa: BLE001 - the twin is updated; only the notification is lost
            log.exception("routing the twin change notification of %s failed", module_id)

    def _resolve(self, rid: str | None, result: tuple[int, bytes]) -> None:
        with self._lock:
            waiter = self._waiters.get(rid or "")
        if waiter is not None:
            waiter[1].append(result)
            waiter[0].set()

    def _call_module(self, module_id: str, method: str, payload: Any) -> tuple[int, Any]:
        """Invoke a direct method on a local module and wait for its response."""
        if not self.broker.connected(module_id):
            return 404, {"message": f"module {module_id} is not connected"}
        rid = secrets.token_hex(8)
        event: threading.Event = threading.Event()
        box: list[Any] = []
        with self._lock:
            self._waiters[rid] = (event, box)
        try:
            topic = p.method_request_topic(self.device_id, method, rid, module_id)
            self._send_local(topic, json.dumps(payload).encode())
            if not event.wait(self.config.method_timeout_secs):
                return 504, {"message": f"{module_id} did not answer {method!r} in time"}
        finally:
            with self._lock:
                self._waiters.pop(rid, None)
        status, raw = box[0]
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        return int(status), body

    def _invoke(self, module_id: str, local: t.LocalTopic, payload: bytes) -> None:
        """A module calls a direct method on another module of this device."""
        rid = local.rid or ""
        try:
            request: Mapping[str, Any] = json.loads(payload or b"{}")
        except ValueError:
            request = {}
        if local.target_device != self.device_id or not local.target_module:
            status, body = 501, {"message": "only modules of this device can be invoked locally"}
        else:
            status, body = self._call_module(
                local.target_module, local.name, request.get("payload")
            )
        topic = t.invoke_response_topic(self.device_id, module_id, status, rid)
        self._send_local(topic, json.dumps({"status": status, "payload": body}).encode())
