"""The hub's MQTT service client: ingest, twin requests, desired pushes, methods, presence.

One privileged paho connection (user ``$edgefleet-hub``, persistent session, QoS 1, manual
acknowledgements). Telemetry goes to a writer thread that inserts batches (duplicates ignored by
the unique (device, message id) key) and acknowledges every PUBLISH of a batch only after its
commit, so a hub crash leaves un-acked messages with the broker, which redelivers them.
Twin and method traffic runs on a small thread pool, acknowledged after it is handled.
Desired-property pushes never wait in the publishing (request) thread: with the embedded broker
every hub publish goes to the broker's in-process queue (``direct_publish``, no socket); with
another broker desired pushes are queued for one pusher thread, which publishes them in order.
Stored telemetry is pruned by ``cloud_hub.mqtt.retention`` (started and stopped with the client).
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite

from cloud_hub import events
from cloud_hub.broker.base import Endpoint
from cloud_hub.errors import HubError, InvalidInput, NotFound
from cloud_hub.hub import Hub
from cloud_hub.models import DeviceRow
from cloud_hub.mqtt.retention import MessagePruner, RetentionPolicy
from cloud_hub.mqtt.tables import MessageRow
from edgefleet import protocol as p

log = logging.getLogger(__name__)

BATCH_MAX = 2000
PUSH_BATCH_MAX = 500
BATCH_WAIT_S = 0.01
ACTIVITY_EVERY_S = 2.0


class DeviceNotOnline(HubError):
    status = 404
    code = "DeviceNotOnline"


class GatewayTimeout(HubError):
    status = 504
    code = "GatewayTimeout"


@dataclass
class _Incoming:
    generation: int
    mid: int
    device_id: str
    module_id: str
    message: p.Message
    enqueued: datetime


@dataclass
class _MethodCall:
    done: threading.Event = field(default_factory=threading.Event)
    status: int = 0
    payload: Any = None


@dataclass
class Stats:
    """Counters of this process; ``latencies`` are creation-to-commit seconds of recent messages
    that carry a numeric ``$.ctime`` (unix seconds; the benchmark sets it)."""

    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))
    stored: int = 0
    window_stored: int = 0
    window_first: float | None = None
    window_last: float | None = None
    duplicates: int = 0
    rejected_too_large: int = 0
    rejected_unknown_device: int = 0
    malformed: int = 0
    batches: int = 0
    expired: int = 0
    prune_passes: int = 0

    def reset_window(self) -> None:
        """Start a new measurement window (latencies and first/last commit)."""
        self.latencies.clear()
        self.window_stored = 0
        self.window_first = self.window_last = None

    def json(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else None

        return {
            "latencyMs": {"count": len(lat), "p50": pct(0.5), "p99": pct(0.99)},
            "window": {
                "stored": self.window_stored,
                "firstCommit": self.window_first,
                "lastCommit": self.window_last,
            },
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejectedTooLarge": self.rejected_too_large,
            "rejectedUnknownDevice": self.rejected_unknown_device,
            "malformed": self.malformed,
            "batches": self.batches,
            "expired": self.expired,
            "prunePasses": self.prune_passes,
        }


class MqttService:
    def __init__(
        self,
        hub: Hub,
        endpoint: Endpoint,
        client_id: str = p.HUB_USERNAME,
        direct_publish: Callable[[list[tuple[str, bytes]]], bool] | None = None,
    ) -> None:
        self.hub = hub
        self.endpoint = endpoint
        self._direct = direct_publish
        self._pushes: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()
        self.stats = Stats()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        if endpoint.service_username:
            self._client.username_pw_set(endpoint.service_username, endpoint.service_password)
        if endpoint.tls:
            ctx = ssl.create_default_context(
                cafile=str(endpoint.ca_file) if endpoint.ca_file else None
            )
            self._client.tls_set_context(ctx)
        self._client.reconnect_delay_set(1, 2)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._generation = 0
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._ingest: queue.Queue[_Incoming] = queue.Queue()
        self._control: queue.Queue[tuple[int, mqtt.MQTTMessage]] = queue.Queue()
        self._lock = threading.Lock()
        self._presence = threading.Condition(self._lock)
        self._online: dict[str, tuple[bool, float, str | None]] = {}
        self._known: set[str] = set()
        self._calls: dict[str, _MethodCall] = {}
        self._activity: dict[str, float] = {}
        self._threads: list[threading.Thread] = []
        self._unsubscribe: list[Callable[[], None]] = []
        self.retention = RetentionPolicy.from_settings(hub.settings.model_extra)
        self._pruner = MessagePruner(
            hub.db, self.retention, on_removed=self._count_expired, on_pass=self._count_pass
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        self._refresh_known()
        bus = self.hub.events
        self._unsubscribe = [
            bus.subscribe(events.TwinDesiredChanged, self._push_desired),
            bus.subscribe(
                (events.DeviceCreated, events.DeviceDeleted), lambda _e: self._refresh_known()
            ),
            bus.subscribe(events.DeviceDeleted, self._purge_messages),
        ]
        targets: list[tuple[Callable[[], None], str]] = [(self._writer, "mqtt-ingest")]
        targets += [(self._control_worker, f"mqtt-control-{i}") for i in range(4)]
        targets.append((self._pusher, "mqtt-desired"))
        for target, name in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(timeout):
            raise RuntimeError(
                f"hub service client cannot connect to the broker at "
                f"{self.endpoint.host}:{self.endpoint.port}"
            )
        self._pruner.start()

    def stop(self) -> None:
        self._pruner.stop()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._pushes.put(None)  # the pusher sends what is queued, then ends
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        self._client.disconnect()
        self._client.loop_stop()

    def _count_expired(self, count: int) -> None:
        self.stats.expired += count

    def _count_pass(self) -> None:
        self.stats.prune_passes += 1

    def _purge_messages(self, event: events.DeviceDeleted) -> None:
        """A deleted device's stored messages go with it (a new device may reuse the id)."""
        from sqlalchemy import delete

        with self.hub.db.write() as session:
            session.execute(delete(MessageRow).where(MessageRow.device_id == event.device_id))
        with self._lock:
            self._online.pop(event.device_id, None)

    def _refresh_known(self) -> None:
        from sqlalchemy import select

        with self.hub.db.read() as session:
            ids = set(session.scalars(select(DeviceRow.device_id)))
        with self._lock:
            self._known = ids

    # -- paho callbacks (network thread) --------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("broker refused the hub service client: %s", reason)
            return
        with self._lock:
            self._generation += 1
        client.subscribe([(topic, 1) for topic in p.HUB_SUBSCRIPTIONS])
        self._connected.set()
        log.info("hub service client connected to %s:%s", self.endpoint.host, self.endpoint.port)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._connected.clear()
        with self._lock:
            self._generation += 1  # acks of the old connection's message ids are void

    def _ack(self, generation: int, mid: int) -> None:
        with self._lock:
            current = self._generation
        if generation == current and mid:
            self._client.ack(mid, 1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            generation = self._generation
        try:
            topic = p.parse_topic(msg.topic)
        except p.ProtocolError:
            self.stats.malformed += 1
            self._ack(generation, msg.mid)
            return
        if topic.kind is p.Kind.TELEMETRY:
            if len(msg.payload) > p.MAX_MESSAGE_BYTES:
                self.stats.rejected_too_large += 1
                log.info("rejected %d-byte message from %s", len(msg.payload), topic.device_id)
                self._ack(generation, msg.mid)
                return
            message = p.Message.from_property_bag(bytes(msg.payload), topic.properties)
            if not message.message_id:
                message.message_id = "gen-" + uuid.uuid4().hex
            self._ingest.put(
                _Incoming(
                    generation,
                    msg.mid,
                    topic.device_id,
                    topic.module_id or "",
                    message,
                    datetime.now(UTC),
                )
            )
            return
        self._control.put((generation, msg))

    # -- telemetry writer -----------------------------------------------------------------------

    def _writer(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._ingest.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + BATCH_WAIT_S
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(self._ingest.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            delay = 0.2
            while True:
                try:
                    self._store(batch)
                    break
                except Exception:
                    # Nothing is acknowledged before the commit: retry; if the hub dies
                    # meanwhile, the broker redelivers the whole batch.
                    log.exception("storing %d messages failed; retrying", len(batch))
                    if self._stop.wait(delay):
                        return
                    delay = min(delay * 2, 5.0)
            for item in batch:
                self._ack(item.generation, item.mid)

    def _store(self, batch: list[_Incoming]) -> None:
        with self._lock:
            known = self._known
        rows: list[dict[str, Any]] = []
        for item in batch:
            if item.device_id not in known:
                self.stats.rejected_unknown_device += 1
                continue
            m = item.message
            rows.append(
                {
                    "device_id": item.device_id,
                    "module_id": item.module_id,
                    "message_id": m.message_id[:128],
                    "enqueued_at": item.enqueued,
                    "properties": {
                        "system": m.system_properties(),
                        "custom": m.custom_properties,
                    },
                    "body": m.data,
                }
            )
        if not rows:
            return
        db = self.hub.db
        insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        # RETURNING counts the rows really inserted (an ORM bulk insert has no rowcount, and a
        # batched executemany's rowcount is not reliable): duplicates are what is left.
        stmt = (
            insert(MessageRow)
            .on_conflict_do_nothing(index_elements=["device_id", "message_id"])
            .returning(MessageRow.seq)
        )
        now = time.monotonic()
        touch = sorted(
            {r["device_id"] for r in rows if now - self._activity.get(r["device_id"], 0) > 1}
        )
        with db.write() as session:
            inserted = len(session.connection().execute(stmt, rows).all())
            if touch:
                session.execute(
                    update(DeviceRow)
                    .where(DeviceRow.device_id.in_(touch))
                    .values(last_activity_time=datetime.now(UTC))
                )
        committed = time.time()
        for device_id in touch:
            self._activity[device_id] = now
        for item in batch:
            ctime = item.message.creation_time
            if ctime and ctime[0].isdigit():
                try:
                    self.stats.latencies.append(committed - float(ctime))
                except ValueError:
                    pass
        self.stats.stored += inserted
        self.stats.window_stored += inserted
        if self.stats.window_first is None:
            self.stats.window_first = committed
        self.stats.window_last = committed
        self.stats.duplicates += len(rows) - inserted
        self.stats.batches += 1

    # -- control traffic ------------------------------------------------------------------------

    def _control_worker(self) -> None:
        while not self._stop.is_set():
            try:
                generation, msg = self._control.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._handle_control(msg)
            except Exception:
                log.exception("handling %s failed", msg.topic)
            self._ack(generation, msg.mid)

    def _publish(self, topic: str, payload: bytes) -> None:
        self._publish_many([(topic, payload)])

    def _publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        if self._direct is not None:
            try:
                if self._direct(messages):
                    return
            except Exception:  # noqa: BLE001 - fall back to the service client
                log.exception("direct publish failed; publishing over MQTT")
        for topic, payload in messages:
            self._client.publish(topic, payload, qos=1)

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish QoS 1 as the hub (cloud-to-device messages)."""
        self._publish(topic, payload)

    def _handle_control(self, msg: mqtt.MQTTMessage) -> None:
        topic = p.parse_topic(msg.topic)
        d, m = topic.device_id, topic.module_id
        if topic.kind is p.Kind.PRESENCE:
            self._on_presence(d, bytes(msg.payload))
        elif topic.kind is p.Kind.TWIN_GET:
            try:
                twin = self.hub.twins.get_device_side(d, m)
            except HubError as exc:
                self._publish(p.twin_response_topic(d, exc.status, topic.rid or "", None, m), b"")
                return
            body = json.dumps(twin).encode()
            self._publish(p.twin_response_topic(d, 200, topic.rid or "", None, m), body)
        elif topic.kind is p.Kind.TWIN_REPORTED:
            try:
                patch = json.loads(msg.payload or b"{}")
                if not isinstance(patch, dict):
                    raise InvalidInput("reported patch must be a JSON object")
                version = self.hub.twins.patch_reported(d, m, patch)
            except (HubError, ValueError) as exc:
                status = exc.status if isinstance(exc, HubError) else 400
                body = json.dumps({"message": str(exc)}).encode()
                self._publish(p.twin_response_topic(d, status, topic.rid or "", None, m), body)
                return
            self._publish(p.twin_response_topic(d, 204, topic.rid or "", version, m), b"")
        elif topic.kind is p.Kind.METHOD_RESPONSE:
            with self._lock:
                call = self._calls.get(f"{d}|{m or ''}|{topic.rid}")
            if call is not None:
                try:
                    call.payload = json.loads(msg.payload) if msg.payload else None
                except ValueError:
                    call.payload = bytes(msg.payload).decode(errors="replace")
                call.status = topic.status or 0
                call.done.set()

    # -- presence -------------------------------------------------------------------------------

    def _on_presence(self, device_id: str, payload: bytes) -> None:
        try:
            state, ts, conn = _presence(payload)
        except p.ProtocolError:
            return
        online = state == p.ONLINE
        with self._lock:
            prev = self._online.get(device_id)
            if prev is not None and not online and prev[0] and conn != prev[2]:
                # an offline from an older connection (a takeover's will) after a newer online
                if ts is not None and ts < prev[1]:
                    return
            self._online[device_id] = (online, ts or time.time(), conn)
            self._presence.notify_all()
        if device_id in self._known:
            self.hub.registry.set_connection_state(device_id, online)

    def is_online(self, device_id: str) -> bool:
        with self._lock:
            state = self._online.get(device_id)
        return bool(state and state[0])

    def wait_online(self, device_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                state = self._online.get(device_id)
                if state and state[0]:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._presence.wait(left)

    # -- desired pushes and methods -------------------------------------------------------------

    def _push_desired(self, event: events.TwinDesiredChanged) -> None:
        """Event handler (request thread): queue the push; never blocks on the broker.

        Encoded here, so a caller changing its patch dict afterwards cannot change what is sent.
        """
        body = json.dumps({**event.patch, "$version": event.version}).encode()
        topic = p.twin_desired_topic(event.device_id, event.version, event.module_id)
        if self._direct is not None and self._direct([(topic, body)]):
            return  # the embedded broker's own queue keeps the order
        self._pushes.put((topic, body))

    def _pusher(self) -> None:
        """Send queued desired pushes in order, a batch at a time, until the stop sentinel."""
        while True:
            batch = [self._pushes.get()]
            while len(batch) < PUSH_BATCH_MAX:
                try:
                    batch.append(self._pushes.get_nowait())
                except queue.Empty:
                    break
            messages = [item for item in batch if item is not None]
            try:
                if messages:
                    self._publish_many(messages)
            except Exception:
                log.exception("pushing %d desired patches failed", len(messages))
            if len(messages) < len(batch):  # the stop sentinel
                return

    def invoke_method(
        self,
        device_id: str,
        module_id: str | None,
        method_name: str,
        payload: Any,
        response_timeout: float = 30.0,
        connect_timeout: float = 0.0,
    ) -> dict[str, Any]:
        """Call a direct method; IoT Hub's semantics for the two timeouts."""
        if module_id is None:
            self.hub.registry.get_device(device_id)  # DeviceNotFound -> 404
        else:
            self.hub.registry.get_module(device_id, module_id)
        try:
            p.validate_id(method_name, "method name")
        except p.ProtocolError as exc:
            raise InvalidInput(str(exc), path="methodName") from exc
        if not self.wait_online(device_id, max(0.0, connect_timeout)):
            raise DeviceNotOnline(f"device {device_id} is not online")
        rid = uuid.uuid4().hex
        key = f"{device_id}|{module_id or ''}|{rid}"
        call = _MethodCall()
        with self._lock:
            self._calls[key] = call
        try:
            self._publish(
                p.method_request_topic(device_id, method_name, rid, module_id),
                json.dumps(payload).encode(),
            )
            if not call.done.wait(max(0.1, response_timeout)):
                raise GatewayTimeout(
                    f"no response to {method_name!r} within {response_timeout:g} s"
                )
        finally:
            with self._lock:
                self._calls.pop(key, None)
        return {"status": call.status, "payload": call.payload}


def _presence(payload: bytes) -> tuple[str, float | None, str | None]:
    state, ts = p.parse_presence(payload)
    conn: str | None = None
    try:
        body = json.loads(payload)
        if isinstance(body, dict) and isinstance(body.get("conn"), str):
            conn = body["conn"]
    except ValueError:
        pass
    return state, ts, conn


__all__ = ["DeviceNotOnline", "GatewayTimeout", "MqttService", "NotFound"]
