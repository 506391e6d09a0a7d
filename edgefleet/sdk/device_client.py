"""Device SDK: one MQTT connection per device carrying the device's and its modules' traffic.

Threaded API on paho-mqtt 2.x. ``DeviceClient`` owns one network thread (connect, reconnect with
exponential backoff and full jitter), one outbox thread (publishes the durable SQLite outbox in
order, QoS 1, deletes rows on PUBACK) and a small pool that runs user handlers, so a handler may
call ``get_twin`` or ``send_message`` itself. Names follow azure-iot-device's clients.

    client = DeviceClient.create_from_symmetric_key(key, "localhost", "dev1", port=8883,
                                                   ca_file="ca.pem", outbox_path="outbox.db")
    client.on_twin_desired_properties_patch_received = lambda patch: ...
    client.connect()
    client.send_message({"t": 21})
    agent = client.module("$edgeAgent")        # same connection, module topics
    desired = agent.get_twin()["desired"]
    agent.patch_twin_reported_properties({"lastDesiredVersion": desired["$version"]})
    client.shutdown()
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edgefleet import protocol as p
from edgefleet.sdk.outbox import Outbox

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]
DesiredHandler = Callable[[JsonDict], None]
MessageHandler = Callable[[p.Message], None]


def _no_op(*_args: Any) -> None:
    return None


class ClientError(RuntimeError):
    """A request the hub answered with an error status, or a client that cannot connect."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class MethodRequest:
    request_id: str
    name: str
    payload: Any
    module_id: str | None = None


@dataclass
class MethodResponse:
    request_id: str
    status: int
    payload: Any = None
    module_id: str | None = None

    @classmethod
    def create_from_method_request(
        cls, request: MethodRequest, status: int, payload: Any = None
    ) -> MethodResponse:
        return cls(request.request_id, status, payload, request.module_id)


MethodHandler = Callable[[MethodRequest], "MethodResponse | None"]


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    status: int = 0
    version: int | None = None
    body: bytes = b""


@dataclass
class _Handlers:
    desired: DesiredHandler | None = None
    method: MethodHandler | None = None
    message: MessageHandler | None = None
    twin_resync: Callable[[JsonDict], None] | None = None
    last_desired_version: int = 0


class _Api:
    """Operations shared by the device and its module channels (``module_id`` selects)."""

    _client: DeviceClient
    _module_id: str | None

    def _h(self) -> _Handlers:
        return self._client._handlers_for(self._module_id)

    @property
    def on_twin_desired_properties_patch_received(self) -> DesiredHandler | None:
        return self._h().desired

    @on_twin_desired_properties_patch_received.setter
    def on_twin_desired_properties_patch_received(self, handler: DesiredHandler | None) -> None:
        self._h().desired = handler

    @property
    def on_method_request_received(self) -> MethodHandler | None:
        return self._h().method

    @on_method_request_received.setter
    def on_method_request_received(self, handler: MethodHandler | None) -> None:
        self._h().method = handler

    @property
    def on_message_received(self) -> MessageHandler | None:
        return self._h().message

    @on_message_received.setter
    def on_message_received(self, handler: MessageHandler | None) -> None:
        self._h().message = handler

    @property
    def on_twin_resync(self) -> Callable[[JsonDict], None] | None:
        """Called with the full twin after every (re)connect when it is newer than the last seen.

        When unset, the desired-patch handler gets the full desired section instead.
        """
        return self._h().twin_resync

    @on_twin_resync.setter
    def on_twin_resync(self, handler: Callable[[JsonDict], None] | None) -> None:
        self._h().twin_resync = handler

    def send_message(self, message: p.Message | bytes | str | JsonDict | list[Any]) -> str:
        """Accept a telemetry message durably (outbox); returns its message id."""
        msg = message if isinstance(message, p.Message) else p.Message.from_body(message)
        return self._client._enqueue([msg], self._module_id)[0]

    def send_messages(self, messages: list[p.Message]) -> list[str]:
        """Accept several messages in one outbox transaction."""
        return self._client._enqueue(messages, self._module_id)

    def get_twin(self, timeout: float = 30.0) -> JsonDict:
        """The full twin as the device sees it: ``{"desired": {...}, "reported": {...}}``."""
        rid = self._client._new_rid()
        pending = self._client._request(
            p.twin_get_topic(self._client.device_id, rid, self._module_id), b"", rid, timeout
        )
        twin: JsonDict = json.loads(pending.body or b"{}")
        return twin

    def patch_twin_reported_properties(self, patch: JsonDict, timeout: float = 30.0) -> int:
        """Merge a patch into the reported properties; returns the new reported ``$version``."""
        rid = self._client._new_rid()
        pending = self._client._request(
            p.twin_reported_topic(self._client.device_id, rid, self._module_id),
            json.dumps(patch).encode(),
            rid,
            timeout,
        )
        return pending.version or 0

    def send_method_response(self, response: MethodResponse) -> None:
        self._client._send_method_response(response)


class ModuleChannel(_Api):
    """A module's view of its device's connection (the edge agent's ``$edgeAgent`` and so on)."""

    def __init__(self, client: DeviceClient, module_id: str) -> None:
        self._client = client
        self._module_id = p.validate_id(module_id, "module id")

    @property
    def module_id(self) -> str:
        assert self._module_id is not None
        return self._module_id


class DeviceClient(_Api):
    def __init__(
        self,
        device_id: str,
        host: str,
        port: int = 8883,
        *,
        symmetric_key: str | None = None,
        key_slot: str = "auto",
        username: str | None = None,
        password: str | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        ca_file: str | Path | None = None,
        tls: bool = True,
        client_id: str | None = None,
        outbox_path: str | Path | None = None,
        keepalive: int = 30,
        max_inflight: int = 256,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        announce_presence: bool = True,
    ) -> None:
        """Credentials: a symmetric key (``key_slot`` auto tries primary then secondary user),
        an explicit user name/password, or an X.509 ``cert_file``/``key_file`` (TLS)."""
        self.device_id = p.validate_id(device_id, "device id")
        self._client = self
        self._module_id = None
        self.host, self.port = host, port
        self.client_id = client_id or device_id
        self._symmetric_key = symmetric_key
        self._slots = ["primary", "secondary"] if key_slot == "auto" else [key_slot]
        self._slot_index = 0
        self._username = username
        self._password = password
        self._keepalive = keepalive
        self._max_inflight = max_inflight
        self._backoff = (backoff_base, backoff_max)
        self._announce = announce_presence
        self.outbox = Outbox(outbox_path)

        self._ssl: ssl.SSLContext | None = None
        if tls:
            self._ssl = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            if cert_file:
                self._ssl.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        self._conn = ""
        self._mqtt = self._new_mqtt()
        # The outbox thread publishes only on the connection it has adopted: (number, client) of
        # the newest successful connect. A new number means "resend the outbox from its start";
        # publishing on a client it has not adopted could overtake the older messages that the
        # resend is about to repeat (the hub keeps the first copy of a message id).
        self._connection: tuple[int, mqtt.Client | None] = (0, None)
        self._adopted = 0

        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._handlers: dict[str | None, _Handlers] = {None: _Handlers()}
        self._modules: dict[str, ModuleChannel] = {}
        self._pending: dict[str, _Pending] = {}
        # Publishes handed to paho on the adopted connection and not yet acknowledged:
        # (outbox seq, paho info). After a reconnect (or in a new process) the outbox is resent.
        self._inflight: list[tuple[int, mqtt.MQTTMessageInfo]] = []
        self._last_submitted = 0
        self._last_error: str | None = None
        self._rid = 0
        self._handler_pool = ThreadPoolExecutor(4, thread_name_prefix=f"ef-{device_id}-h")
        self._ordered_pool = ThreadPoolExecutor(1, thread_name_prefix=f"ef-{device_id}-o")
        self._threads: list[threading.Thread] = []
        self._started = False

    # -- constructors ---------------------------------------------------------------------------

    @classmethod
    def create_from_symmetric_key(
        cls, symmetric_key: str, hostname: str, device_id: str, **kwargs: Any
    ) -> DeviceClient:
        host, _, port = hostname.partition(":")
        if port:
            kwargs.setdefault("port", int(port))
        return cls(device_id, host, symmetric_key=symmetric_key, **kwargs)

    @classmethod
    def create_from_x509_certificate(
        cls,
        cert_file: str | Path,
        key_file: str | Path,
        hostname: str,
        device_id: str,
        **kwargs: Any,
    ) -> DeviceClient:
        host, _, port = hostname.partition(":")
        if port:
            kwargs.setdefault("port", int(port))
        return cls(device_id, host, cert_file=cert_file, key_file=key_file, **kwargs)

    @classmethod
    def create_from_credentials(cls, creds: JsonDict, **kwargs: Any) -> DeviceClient:
        """From the JSON of ``edgefleet device mqtt-credentials ID --json``."""
        return cls(
            creds["client_id"],
            creds["host"],
            int(creds["port"]),
            username=creds.get("username"),
            password=creds.get("password"),
            tls=bool(creds.get("tls")),
            ca_file=creds.get("ca_file"),
            **kwargs,
        )

    # -- module channels ------------------------------------------------------------------------

    def module(self, module_id: str) -> ModuleChannel:
        """The channel for one of this device's modules (created on first use)."""
        with self._lock:
            channel = self._modules.get(module_id)
            if channel is None:
                channel = ModuleChannel(self, module_id)
                self._modules[module_id] = channel
            return channel

    def _handlers_for(self, module_id: str | None) -> _Handlers:
        with self._lock:
            handlers = self._handlers.get(module_id)
            if handlers is None:
                handlers = self._handlers[module_id] = _Handlers()
            return handlers

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def connect(self, timeout: float = 30.0) -> None:
        """Start the network threads and wait for the first successful connection."""
        if not self._started:
            self._started = True
            for target, name in ((self._network_loop, "net"), (self._outbox_loop, "outbox")):
                thread = threading.Thread(
                    target=target, name=f"ef-{self.device_id}-{name}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        if not self._connected.wait(timeout):
            raise ClientError(
                f"could not connect to {self.host}:{self.port} as {self.device_id}"
                + (f": {self._last_error}" if self._last_error else "")
            )

    def wait_for_outbox_empty(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.outbox) == 0:
                return True
            time.sleep(0.05)
        return len(self.outbox) == 0

    def shutdown(self, timeout: float = 5.0) -> None:
        """Publish offline presence, disconnect cleanly and stop every thread.

        Messages still in the outbox stay there for the next run.
        """
        if self._connected.is_set():
            try:
                info = self._mqtt.publish(
                    p.presence_topic(self.device_id),
                    p.presence_payload(p.OFFLINE, self.client_id, self._conn),
                    qos=1,
                    retain=True,
                )
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self._stop.set()
        try:
            self._mqtt.disconnect()
        except Exception:  # noqa: BLE001 - already down
            pass
        for thread in self._threads:
            thread.join(timeout)
        self._flush_acked()
        self._handler_pool.shutdown(wait=False, cancel_futures=True)
        self._ordered_pool.shutdown(wait=False, cancel_futures=True)
        self.outbox.close()

    disconnect = shutdown

    # -- network thread -------------------------------------------------------------------------

    def _credentials(self) -> tuple[str | None, str | None]:
        if self._username is not None:
            return self._username, self._password
        if self._symmetric_key is not None:
            slot = self._slots[self._slot_index % len(self._slots)]
            return (
                p.mqtt_username(self.device_id, slot),
                p.mqtt_password(self.device_id, self._symmetric_key),
            )
        return None, None

    def _new_mqtt(self) -> mqtt.Client:
        """A fresh paho client for every connection attempt: the outbox, not paho's in-memory
        queue, is what gets resent after a reconnect (paho can strand its queued messages)."""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        client.max_inflight_messages_set(self._max_inflight + 32)
        client.max_queued_messages_set(0)
        if self._ssl is not None:
            client.tls_set_context(self._ssl)
        # Our own network thread runs loop(); without a socket-write callback paho would write
        # from the publishing thread directly, racing that loop on the (TLS) socket. With it,
        # publishes only queue and wake the loop through paho's socket pair.
        client.on_socket_register_write = _no_op
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _network_loop(self) -> None:
        attempt = 0
        first = True
        while not self._stop.is_set():
            if not first:
                old, self._mqtt = self._mqtt, self._new_mqtt()
                try:
                    old.disconnect()
                except Exception:  # noqa: BLE001 - already closed
                    pass
            first = False
            username, password = self._credentials()
            if username is not None:
                self._mqtt.username_pw_set(username, password)
            self._conn = uuid.uuid4().hex[:12]
            self._mqtt.will_set(
                p.presence_topic(self.device_id),
                p.presence_payload(p.OFFLINE, self.client_id, self._conn),
                qos=1,
                retain=True,
            )
            try:
                self._mqtt.connect(self.host, self.port, self._keepalive)
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._last_error = str(exc) or type(exc).__name__
            else:
                while not self._stop.is_set():
                    rc = self._mqtt.loop(timeout=0.2)
                    if self._connected.is_set():
                        attempt = 0
                    if rc != mqtt.MQTT_ERR_SUCCESS:
                        break
                self._set_disconnected()
            if self._stop.is_set():
                break
            attempt += 1
            base, cap = self._backoff
            delay = random.uniform(0, min(cap, base * 2 ** min(attempt, 16)))  # full jitter
            self._stop.wait(max(0.05, delay))
        self._set_disconnected()

    def _set_disconnected(self) -> None:
        if self._connected.is_set():
            self._connected.clear()
        with self._lock:
            pending = list(self._pending.values())
        for req in pending:  # requests are not replayed: callers see a clear failure
            req.status = -1
            req.done.set()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        if reason.is_failure:
            self._last_error = f"connection refused: {reason}"
            self._slot_index += 1  # auto: try the other key slot's user name next time
            return
        self._last_error = None
        for topic in p.device_subscriptions(self.device_id):
            client.subscribe(topic, qos=1)
        if self._announce:
            client.publish(
                p.presence_topic(self.device_id),
                p.presence_payload(p.ONLINE, self.client_id, self._conn),
                qos=1,
                retain=True,
            )
        self._connection = (self._connection[0] + 1, client)  # one assignment: read atomically
        self._connected.set()
        self._ordered_pool.submit(self._resync_twins)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        self._connected.clear()

    # -- outbox ---------------------------------------------------------------------------------

    def _enqueue(self, messages: list[p.Message], module_id: str | None) -> list[str]:
        items: list[tuple[str, bytes]] = []
        for msg in messages:
            if len(msg.data) > p.MAX_MESSAGE_BYTES:
                raise ValueError(f"message of {len(msg.data)} bytes exceeds 256 KiB")
            items.append((msg.telemetry_topic(self.device_id, module_id), msg.data))
        self.outbox.put_many(items)
        return [m.message_id for m in messages]

    def _flush_acked(self) -> None:
        """Delete acknowledged publishes from the outbox (only the outbox thread calls this)."""
        done: list[int] = []
        pending: list[tuple[int, mqtt.MQTTMessageInfo]] = []
        for seq, info in self._inflight:  # one look per entry: the flag flips concurrently
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                continue  # never sent (connection gone): resubmitted after the reconnect
            if info._published:  # is_published() without its exceptions
                done.append(seq)
            else:
                pending.append((seq, info))
        if not done:
            return
        self._inflight = pending
        try:
            self.outbox.remove(done)
        except Exception:  # noqa: BLE001 - closed during shutdown: resent next run
            log.debug("outbox remove failed", exc_info=True)

    def _outbox_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._outbox_step()
            except Exception:  # noqa: BLE001 - the outbox thread must not die
                log.exception("outbox loop error")
                self._stop.wait(0.5)

    def _outbox_step(self) -> None:
        self._flush_acked()
        if not self._connected.wait(0.2):
            return
        number, client = self._connection
        if number != self._adopted or client is None:
            # A new connection: whatever was in flight on the old one is sent again, in order.
            self._adopted = number
            self._inflight = []
            self._last_submitted = 0
            if client is None:
                return
        room = self._max_inflight - len(self._inflight)
        if room <= 0:
            time.sleep(0.002)
            return
        batch = self.outbox.after(self._last_submitted, min(room, 64))
        if not batch:
            self.outbox.wait_for_new(self._last_submitted, 0.02 if self._inflight else 0.2)
            return
        for seq, topic, payload in batch:
            if not self._connected.is_set() or self._connection[0] != number:
                break
            info = client.publish(topic, payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                break
            self._inflight.append((seq, info))
            self._last_submitted = seq

    # -- requests -------------------------------------------------------------------------------

    def _new_rid(self) -> str:
        with self._lock:
            self._rid += 1
            return f"{self._rid}.{uuid.uuid4().hex[:8]}"

    def _request(self, topic: str, payload: bytes, rid: str, timeout: float) -> _Pending:
        deadline = time.monotonic() + timeout
        if not self._connected.wait(timeout):
            raise ClientError(f"{self.device_id}: not connected")
        pending = _Pending()
        with self._lock:
            self._pending[rid] = pending
        try:
            self._mqtt.publish(topic, payload, qos=1)
            if not pending.done.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"no answer from the hub to {topic}")
        finally:
            with self._lock:
                self._pending.pop(rid, None)
        if pending.status == -1:
            raise ClientError("connection lost before the hub answered", None)
        if pending.status >= 300:
            detail = pending.body.decode(errors="replace")[:200]
            raise ClientError(f"hub answered {pending.status}: {detail}", pending.status)
        return pending

    def _send_method_response(self, response: MethodResponse) -> None:
        body = json.dumps(response.payload).encode()
        topic = p.method_response_topic(
            self.device_id, response.status, response.request_id, response.module_id
        )
        self._mqtt.publish(topic, body, qos=1)

    # -- inbound --------------------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = p.parse_topic(msg.topic)
        except p.ProtocolError:
            log.warning("ignoring unexpected topic %s", msg.topic)
            return
        if topic.device_id != self.device_id:
            return
        if topic.kind is p.Kind.TWIN_RESPONSE:
            with self._lock:
                pending = self._pending.get(topic.rid or "")
            if pending is not None:
                pending.status = topic.status or 0
                pending.version = topic.version
                pending.body = bytes(msg.payload)
                pending.done.set()
        elif topic.kind is p.Kind.TWIN_DESIRED:
            payload = bytes(msg.payload)
            self._ordered_pool.submit(self._deliver_desired, topic, payload)
        elif topic.kind is p.Kind.METHOD_REQUEST:
            payload = bytes(msg.payload)
            self._handler_pool.submit(self._run_method, topic, payload)
        elif topic.kind is p.Kind.C2D:
            message = p.Message.from_property_bag(bytes(msg.payload), topic.properties)
            self._ordered_pool.submit(self._deliver_c2d, topic.module_id, message)

    def _deliver_desired(self, topic: p.Topic, payload: bytes) -> None:
        handlers = self._handlers_for(topic.module_id)
        version = topic.version or 0
        if version <= handlers.last_desired_version:
            return  # stale or duplicate push
        handlers.last_desired_version = version
        if handlers.desired is None:
            return
        try:
            patch = json.loads(payload or b"{}")
            handlers.desired(patch)
        except Exception:
            log.exception("desired-properties handler failed")

    def _deliver_c2d(self, module_id: str | None, message: p.Message) -> None:
        handler = self._handlers_for(module_id).message
        if handler is None:
            return
        try:
            handler(message)
        except Exception:
            log.exception("message handler failed")

    def _run_method(self, topic: p.Topic, payload: bytes) -> None:
        rid = topic.rid or ""
        try:
            body = json.loads(payload) if payload else None
        except ValueError:
            body = payload.decode(errors="replace")
        request = MethodRequest(rid, topic.method or "", body, topic.module_id)
        handler = self._handlers_for(topic.module_id).method
        if handler is None:
            response: MethodResponse | None = MethodResponse.create_from_method_request(
                request, 501, {"message": f"method {request.name!r} not implemented"}
            )
        else:
            try:
                response = handler(request)
            except Exception as exc:
                log.exception("method handler failed")
                response = MethodResponse.create_from_method_request(
                    request, 500, {"message": str(exc)}
                )
        if response is not None:
            self._send_method_response(response)

    def _fetch_twin_while_connected(self, api: _Api, module_id: str | None) -> JsonDict | None:
        """Get a twin, retrying with backoff while this connection lasts.

        A request sent right after CONNACK can be lost while the broker is still setting up the
        session's subscriptions; giving up would leave the device on a stale desired state until
        the next desired change, so the fetch is retried instead. A connection on which the hub
        never answers (a broker that took the session over badly) is dropped after a few tries:
        the reconnect resyncs again.
        """
        delay = 0.5
        conn = self._conn
        for _ in range(3):
            if self._stop.is_set() or not self._connected.is_set() or self._conn != conn:
                return None
            try:
                return api.get_twin(timeout=5)
            except (ClientError, TimeoutError) as exc:
                log.info(
                    "twin resync of %s/%s failed, retrying: %s", self.device_id, module_id, exc
                )
                self._stop.wait(delay)
                delay *= 2
        if not self._stop.is_set() and self._conn == conn:
            log.warning("no twin answer on this connection of %s: reconnecting", self.device_id)
            self._mqtt.disconnect()
        return None

    def _resync_twins(self) -> None:
        """After (re)connect: fetch full twins of channels that listen for desired changes."""
        with self._lock:
            targets = [
                (mid, h)
                for mid, h in self._handlers.items()
                if h.desired is not None or h.twin_resync is not None
            ]
        for module_id, handlers in targets:
            api: _Api = self if module_id is None else self.module(module_id)
            twin = self._fetch_twin_while_connected(api, module_id)
            if twin is None:
                continue  # disconnected or stopping: the next connect resyncs again
            desired = twin.get("desired", {})
            version = int(desired.get("$version", 0))
            if version <= handlers.last_desired_version:
                continue
            handlers.last_desired_version = version
            try:
                if handlers.twin_resync is not None:
                    handlers.twin_resync(twin)
                elif handlers.desired is not None:
                    handlers.desired(desired)
            except Exception:
                log.exception("twin resync handler failed")
