"""Device SDK: one MQTT connection per device carrying the device's and its modules' traffic.

Threaded API on paho-mqtt 2.x. ``DeviceClient`` owns one network thread (connect, reconnect with
exponential backoff and full jitter: ``device_connection``), one outbox thread (publishes the
durable SQLite outbox in order, QoS 1, deletes rows on PUBACK: ``outbox_sender``) and a small pool
that runs user handlers, so a handler may call ``get_twin`` or ``send_message`` itself. Twin
requests and resyncs are in ``device_twin``, method dispatch in ``methods``. Names follow
azure-iot-device's clients.

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
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edgefleet import protocol as p
from edgefleet.sdk import methods
from edgefleet.sdk.device_connection import ConnectionSettings, DeviceConnection
from edgefleet.sdk.device_twin import (
    ChannelHandlers,
    DesiredHandler,
    Pending,
    TwinRequests,
    apply_resync,
    deliver_desired,
    fetch_twin_while_connected,
)
from edgefleet.sdk.errors import ClientError
from edgefleet.sdk.methods import MethodHandler, MethodRequest, MethodResponse
from edgefleet.sdk.outbox import Outbox
from edgefleet.sdk.outbox_sender import OutboxSender

__all__ = [
    "ClientError",
    "DeviceClient",
    "MethodHandler",
    "MethodRequest",
    "MethodResponse",
    "ModuleChannel",
]

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]
MessageHandler = Callable[[p.Message], None]


class _Api:
    """Operations shared by the device and its module channels (``module_id`` selects)."""

    _client: DeviceClient
    _module_id: str | None

    def _h(self) -> ChannelHandlers:
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
        self.outbox = Outbox(outbox_path)

        context: ssl.SSLContext | None = None
        if tls:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            if cert_file:
                context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        settings = ConnectionSettings(
            device_id=self.device_id,
            host=host,
            port=port,
            client_id=self.client_id,
            symmetric_key=symmetric_key,
            key_slots=["primary", "secondary"] if key_slot == "auto" else [key_slot],
            username=username,
            password=password,
            ssl_context=context,
            keepalive=keepalive,
            max_inflight=max_inflight,
            backoff=(backoff_base, backoff_max),
            announce_presence=announce_presence,
        )
        self._link = DeviceConnection(
            settings,
            on_message=self._on_message,
            on_connected=self._on_connected,
            on_lost=self._on_lost,
        )
        self._requests = TwinRequests(self.device_id, self._link)
        self._sender = OutboxSender(self.outbox, self._link, max_inflight)

        self._lock = threading.Lock()
        self._handlers: dict[str | None, ChannelHandlers] = {None: ChannelHandlers()}
        self._modules: dict[str, ModuleChannel] = {}
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

    def _handlers_for(self, module_id: str | None) -> ChannelHandlers:
        with self._lock:
            handlers = self._handlers.get(module_id)
            if handlers is None:
                handlers = self._handlers[module_id] = ChannelHandlers()
            return handlers

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._link.connected.is_set()

    @property
    def _mqtt(self) -> mqtt.Client:
        """The paho client of the current connection attempt."""
        return self._link.mqtt

    def connect(self, timeout: float = 30.0) -> None:
        """Start the network threads and wait for the first successful connection."""
        if not self._started:
            self._started = True
            for target, name in ((self._link.run, "net"), (self._sender.run, "outbox")):
                thread = threading.Thread(
                    target=target, name=f"ef-{self.device_id}-{name}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        if not self._link.connected.wait(timeout):
            error = self._link.last_error
            raise ClientError(
                f"could not connect to {self.host}:{self.port} as {self.device_id}"
                + (f": {error}" if error else "")
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
        self._link.say_offline(timeout)
        self._link.close()
        for thread in self._threads:
            thread.join(timeout)
        self._sender.flush_acked()
        self._handler_pool.shutdown(wait=False, cancel_futures=True)
        self._ordered_pool.shutdown(wait=False, cancel_futures=True)
        self.outbox.close()

    disconnect = shutdown

    def _on_connected(self) -> None:
        self._ordered_pool.submit(self._resync_twins)

    def _on_lost(self) -> None:
        self._requests.fail_all()  # requests are not replayed: callers see a clear failure

    # -- sending --------------------------------------------------------------------------------

    def _enqueue(self, messages: list[p.Message], module_id: str | None) -> list[str]:
        return self._sender.enqueue(self.device_id, messages, module_id)

    def _new_rid(self) -> str:
        return self._requests.new_rid()

    def _request(self, topic: str, payload: bytes, rid: str, timeout: float) -> Pending:
        return self._requests.request(topic, payload, rid, timeout)

    def _send_method_response(self, response: MethodResponse) -> None:
        topic, body = methods.encode_response(self.device_id, response.module_id, response)
        self._link.publish(topic, body)

    # -- inbound --------------------------------------------------------------------------------

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = p.parse_topic(msg.topic)
        except p.ProtocolError:
            log.warning("ignoring unexpected topic %s", msg.topic)
            return
        if topic.device_id != self.device_id:
            return
        if topic.kind is p.Kind.TWIN_RESPONSE:
            self._requests.answer(
                topic.rid or "", topic.status or 0, topic.version, bytes(msg.payload)
            )
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
        deliver_desired(self._handlers_for(topic.module_id), topic.version or 0, payload)

    def _deliver_c2d(self, module_id: str | None, message: p.Message) -> None:
        handler = self._handlers_for(module_id).message
        if handler is None:
            return
        try:
            handler(message)
        except Exception:
            log.exception("message handler failed")

    def _run_method(self, topic: p.Topic, payload: bytes) -> None:
        request = methods.decode_request(
            topic.rid or "", topic.method or "", payload, topic.module_id
        )
        response = methods.answer(self._handlers_for(topic.module_id).method, request, log)
        if response is not None:
            self._send_method_response(response)

    def _resync_twins(self) -> None:
        """After (re)connect: fetch full twins of channels that listen for desired changes."""
        with self._lock:
            targets = [(mid, h) for mid, h in self._handlers.items() if h.wants_twin]
        for module_id, handlers in targets:
            api: _Api = self if module_id is None else self.module(module_id)
            twin = fetch_twin_while_connected(self._link, api.get_twin, module_id)
            if twin is None:
                continue  # disconnected or stopping: the next connect resyncs again
            apply_resync(handlers, twin)
