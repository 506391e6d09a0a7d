"""Module SDK: a module's connection to its device's edge hub (azure-iot-device's names).

    client = ModuleClient.create_from_environment()      # env given by the edge agent
    client.on_message_received = lambda msg: print(msg.input_name, msg.data)
    client.on_twin_desired_properties_patch_received = lambda patch: ...
    client.on_method_request_received = lambda req: MethodResponse.create_from_method_request(
        req, 200, {"ok": True})
    client.connect()
    client.send_message_to_output(Message(b'{"t": 21}', content_type="application/json"), "out1")
    twin = client.get_twin()
    client.patch_twin_reported_properties({"state": "ok"})
    client.shutdown()

It speaks MQTT to the edge hub's local broker with the module's own credentials; the hub's ACL
confines it to its own topics. ``send_message_to_output`` returns once the hub has accepted the
message (for upstream routes: committed to its store).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet import module_topics as t
from edgefleet import protocol as p
from edgefleet.connection_string import parse_connection_string
from edgefleet.protocol import Message
from edgefleet.sdk import methods
from edgefleet.sdk.errors import ClientError, MessageRefusedError
from edgefleet.sdk.methods import MethodHandler, MethodRequest, MethodResponse

__all__ = [
    "ClientError",
    "Message",
    "MessageRefusedError",
    "MethodRequest",
    "MethodResponse",
    "ModuleClient",
]

log = logging.getLogger("edgefleet.module")

JsonDict = dict[str, Any]


def _wait_acknowledged(info: mqtt.MQTTMessageInfo, deadline: float) -> bool:
    """Wait for the PUBACK until ``deadline`` (monotonic); False when it did not come. A publish
    made while disconnected is queued by paho (rc NO_CONN) and sent after the reconnect, so it
    is waited for like any other. Waits on the publish's own condition, which paho notifies
    once the publish counts as acknowledged (its ``on_publish`` runs just before that)."""
    condition = info._condition
    with condition:
        while not info._published:
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise ClientError(f"publish failed: {mqtt.error_string(info.rc)}")
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            condition.wait(min(left, 0.5))
    return True


class ModuleClient:
    def __init__(
        self,
        device_id: str,
        module_id: str,
        host: str,
        port: int,
        password: str,
        *,
        keepalive: int = 30,
        client_id: str | None = None,
    ) -> None:
        self.device_id = p.validate_id(device_id, "device id")
        self.module_id = p.validate_id(module_id, "module id")
        self.host, self.port = host, port
        self._mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"{device_id}/{module_id}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self._mqtt.username_pw_set(module_id, password)
        self._mqtt.max_inflight_messages_set(1000)
        self._mqtt.max_queued_messages_set(0)
        self._mqtt.reconnect_delay_set(1, 2)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_disconnect = self._on_disconnect
        self._mqtt.on_message = self._on_message
        self._mqtt.on_subscribe = self._on_subscribe
        self._keepalive = keepalive
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[threading.Event, list[tuple[int, bytes, int | None]]]] = {}
        self._rid = 0
        # refusal notices by message id; each arrives just before the PUBACK of its publish
        self._refused: dict[str, tuple[int, str]] = {}
        self._ordered = ThreadPoolExecutor(1, thread_name_prefix=f"{module_id}-in")
        self._handlers = ThreadPoolExecutor(4, thread_name_prefix=f"{module_id}-h")
        self._started = False
        self._last_rc: str | None = None
        self.on_message_received: Callable[[Message], None] | None = None
        self.on_twin_desired_properties_patch_received: Callable[[JsonDict], None] | None = None
        self.on_method_request_received: MethodHandler | None = None

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def create_from_connection_string(cls, connection_string: str, **kwargs: Any) -> ModuleClient:
        parts = parse_connection_string(connection_string)
        try:
            host = parts.get("GatewayHostName") or parts["HostName"]
            return cls(
                parts["DeviceId"],
                parts["ModuleId"],
                host.split(":")[0],
                int(parts.get("Port") or (host.split(":")[1] if ":" in host else 1883)),
                parts["SharedAccessKey"],
                **kwargs,
            )
        except (KeyError, ValueError) as exc:
            raise ClientError(f"bad module connection string: {exc}") from None

    @classmethod
    def create_from_environment(
        cls, environ: Mapping[str, str] | None = None, **kwargs: Any
    ) -> ModuleClient:
        """From the variables the edge agent sets: the edge hub's native listener
        (IOTEDGE_EDGEHUBHOST/IOTEDGE_EDGEHUBPORT/IOTEDGE_MODULEKEY), else
        ``EdgeHubConnectionString`` (with ``Port=``, or a port in ``GatewayHostName``).
        ``environ`` replaces the process environment."""
        env = os.environ if environ is None else environ
        if env.get("EdgeHubConnectionString") and not env.get("IOTEDGE_EDGEHUBPORT"):
            return cls.create_from_connection_string(env["EdgeHubConnectionString"], **kwargs)
        try:
            return cls(
                env["IOTEDGE_DEVICEID"],
                env["IOTEDGE_MODULEID"],
                env.get("IOTEDGE_EDGEHUBHOST") or env.get("IOTEDGE_GATEWAYHOSTNAME", "127.0.0.1"),
                int(env["IOTEDGE_EDGEHUBPORT"]),
                env["IOTEDGE_MODULEKEY"],
                **kwargs,
            )
        except (KeyError, ValueError) as exc:
            raise ClientError(f"module environment incomplete: {exc}") from None

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def connect(self, timeout: float = 30.0) -> None:
        if not self._started:
            self._started = True
            try:
                self._mqtt.connect(self.host, self.port, self._keepalive)
            except OSError as exc:
                self._last_rc = str(exc)
                self._mqtt.connect_async(self.host, self.port, self._keepalive)
            self._mqtt.loop_start()
        if not self._connected.wait(timeout):
            raise ClientError(
                f"{self.module_id}: cannot connect to the edge hub at {self.host}:{self.port}"
                + (f" ({self._last_rc})" if self._last_rc else "")
            )

    def shutdown(self) -> None:
        try:
            self._mqtt.disconnect()
        finally:
            self._mqtt.loop_stop()
            self._ordered.shutdown(wait=False, cancel_futures=True)
            self._handlers.shutdown(wait=False, cancel_futures=True)
            self._connected.clear()

    disconnect = shutdown

    def _on_connect(self, c: mqtt.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            self._last_rc = str(rc)
            return
        c.subscribe(
            [(topic, 1) for topic in t.module_subscriptions(self.device_id, self.module_id)]
        )

    def _on_subscribe(self, c: mqtt.Client, u: Any, mid: int, codes: Any, props: Any) -> None:
        self._connected.set()  # inputs, twin and method topics are live from here on

    def _on_disconnect(self, c: mqtt.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connected.clear()

    # --- messages -------------------------------------------------------------------------------

    def send_message_to_output(
        self, message: Message | bytes | str | JsonDict, output_name: str, timeout: float = 30.0
    ) -> str:
        """Send on an output; returns the message id once the edge hub acknowledged it."""
        return self.send_messages_to_output([message], output_name, timeout)[0]

    def send_messages_to_output(
        self,
        messages: list[Message | bytes | str | JsonDict],
        output_name: str,
        timeout: float = 30.0,
    ) -> list[str]:
        """Pipeline several messages on one output and wait for all acknowledgements; raises
        ``MessageRefusedError`` when the edge hub did not store some of them."""
        infos = []
        ids = []
        for item in messages:
            msg = item if isinstance(item, Message) else Message.from_body(item)
            msg.output_name = output_name
            if len(msg.data) > p.MAX_MESSAGE_BYTES:
                raise ValueError(f"message of {len(msg.data)} bytes exceeds 256 KiB")
            topic = t.output_topic(self.device_id, self.module_id, output_name, msg.property_bag())
            infos.append(self._mqtt.publish(topic, msg.data, qos=1))
            ids.append(msg.message_id)
        deadline = time.monotonic() + timeout
        for info in infos:
            if not _wait_acknowledged(info, deadline):
                raise ClientError(f"{self.module_id}: the edge hub did not acknowledge")
        self._raise_refused(ids)
        return ids

    def _raise_refused(self, ids: list[str]) -> None:
        with self._lock:
            refused = [(mid, self._refused.pop(mid)) for mid in ids if mid in self._refused]
        if not refused:
            return
        status, reason = refused[0][1]
        raise MessageRefusedError(
            f"{self.module_id}: {len(refused)} of {len(ids)} message(s) refused ({status}): "
            f"{reason}",
            status,
            [mid for mid, _ in refused],
        )

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            local = t.parse_local(msg.topic)
        except (p.ProtocolError, ValueError):
            log.warning("ignored topic %s", msg.topic)
            return
        payload = bytes(msg.payload)
        if local.kind == "input":
            message = Message.from_property_bag(payload, local.bag or {})
            message.input_name = local.name
            self._ordered.submit(self._call, self.on_message_received, message)
        elif local.kind == "twin_desired":
            try:
                patch = json.loads(payload or b"{}")
            except ValueError:
                return
            self._ordered.submit(self._call, self.on_twin_desired_properties_patch_received, patch)
        elif local.kind == "method_request":
            self._handlers.submit(self._run_method, local, payload)
        elif local.kind == "refused":
            self._note_refusal(local, payload)
        elif local.kind in ("twin_response", "invoke_res"):
            with self._lock:
                waiter = self._pending.get(local.rid or "")
            if waiter is not None:
                waiter[1].append((local.status or 0, payload, local.version))
                waiter[0].set()

    def _note_refusal(self, local: t.LocalTopic, payload: bytes) -> None:
        try:
            reason = str(json.loads(payload).get("message", ""))
        except (ValueError, AttributeError):
            reason = payload.decode(errors="replace")
        mid = (local.bag or {}).get(p.SYS_MESSAGE_ID, "")
        with self._lock:
            if len(self._refused) > 10_000:  # notices nobody waited for (timed-out sends)
                self._refused.clear()
            self._refused[mid] = (local.status or 503, reason)

    @staticmethod
    def _call(handler: Callable[[Any], Any] | None, arg: Any) -> None:
        if handler is None:
            return
        try:
            handler(arg)
        except Exception:
            log.exception("handler failed")

    # --- twin -----------------------------------------------------------------------------------

    def _request(
        self, topic: str, payload: bytes, rid: str, timeout: float
    ) -> tuple[int, bytes, int | None]:
        event = threading.Event()
        box: list[tuple[int, bytes, int | None]] = []
        with self._lock:
            self._pending[rid] = (event, box)
        try:
            if not self._connected.wait(timeout):
                raise ClientError(f"{self.module_id}: not connected to the edge hub")
            self._mqtt.publish(topic, payload, qos=1)
            if not event.wait(timeout):
                raise ClientError(f"{self.module_id}: no answer from the edge hub", 504)
        finally:
            with self._lock:
                self._pending.pop(rid, None)
        status, body, version = box[0]
        if status >= 300:
            try:
                detail = json.loads(body).get("message", "")
            except (ValueError, AttributeError):
                detail = body.decode(errors="replace")
            raise ClientError(f"{self.module_id}: request failed ({status}): {detail}", status)
        return box[0]

    def _new_rid(self) -> str:
        with self._lock:
            self._rid += 1
            return f"{self._rid}.{uuid.uuid4().hex[:8]}"

    def get_twin(self, timeout: float = 30.0) -> JsonDict:
        """The module twin: ``{"desired": {...}, "reported": {...}}`` (relayed from the hub)."""
        rid = self._new_rid()
        topic = p.twin_get_topic(self.device_id, rid, self.module_id)
        _status, body, _v = self._request(topic, b"", rid, timeout)
        twin: JsonDict = json.loads(body or b"{}")
        return twin

    def patch_twin_reported_properties(self, patch: JsonDict, timeout: float = 30.0) -> int:
        rid = self._new_rid()
        topic = p.twin_reported_topic(self.device_id, rid, self.module_id)
        _status, _body, version = self._request(topic, json.dumps(patch).encode(), rid, timeout)
        return version or 0

    # --- methods --------------------------------------------------------------------------------

    def _run_method(self, local: t.LocalTopic, payload: bytes) -> None:
        request = methods.decode_request(local.rid or "", local.name, payload, self.module_id)
        response = methods.answer(self.on_method_request_received, request, log)
        if response is not None:
            self.send_method_response(response)

    def send_method_response(self, response: MethodResponse) -> None:
        topic, body = methods.encode_response(self.device_id, self.module_id, response)
        self._mqtt.publish(topic, body, qos=1)

    def invoke_method(
        self, method_params: JsonDict, device_id: str, module_id: str | None = None
    ) -> JsonDict:
        """Call a direct method on another module of this device: ``{"status", "payload"}``."""
        name = str(method_params["methodName"])
        timeout = float(method_params.get("responseTimeoutInSeconds", 30))
        rid = self._new_rid()
        target = f"{device_id}/{module_id}" if module_id else device_id
        topic = t.invoke_topic(self.device_id, self.module_id, target, name, rid)
        body = json.dumps({"payload": method_params.get("payload")}).encode()
        _status, raw, _v = self._request(topic, body, rid, timeout + 5)
        result: JsonDict = json.loads(raw or b"{}")
        return result
