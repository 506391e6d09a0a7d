"""The hub's MQTT service client, composed of its parts: the paho connection
(``transport``), telemetry ingest (``ingest``), presence (``presence``), twins over MQTT
(``twin_control``), direct methods (``direct_methods``), counters (``stats``) and the retention
pruner (``retention``, started and stopped with the client).

Telemetry goes to the ingest writer thread; all other traffic the hub subscribes to (presence,
twin requests, method responses) runs on a small pool of control threads and is acknowledged
after it is handled.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from cloud_hub import events
from cloud_hub.broker.base import Endpoint
from cloud_hub.hub import Hub
from cloud_hub.leases import Lease
from cloud_hub.mqtt import subscriptions
from cloud_hub.mqtt.direct_methods import DirectMethods
from cloud_hub.mqtt.ingest import KnownDevices, TelemetryIngest
from cloud_hub.mqtt.presence import Presence
from cloud_hub.mqtt.retention import MessagePruner, RetentionPolicy
from cloud_hub.mqtt.stats import Stats
from cloud_hub.mqtt.stored_messages import delete_messages
from cloud_hub.mqtt.transport import DirectPublish, HubConnection
from cloud_hub.mqtt.twin_control import DesiredPushes, TwinRequests
from edgefleet import protocol as p

log = logging.getLogger(__name__)

CONTROL_THREADS = 4
QUIET_S = 0.5  # nothing received for this long after leaving the shared subscriptions


class ServiceClient:
    """Starts, routes to and stops the parts of the hub's MQTT side."""

    def __init__(
        self,
        hub: Hub,
        endpoint: Endpoint,
        instance: str | None = None,
        direct_publish: DirectPublish | None = None,
        module_connected: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.hub = hub
        #: this process's name among several hub processes (None: the only one)
        self.instance = instance
        self.stats = Stats()
        self._stop = threading.Event()
        self._connection = HubConnection(
            endpoint,
            subscriptions.client_id(instance),
            self._on_message,
            direct_publish,
            subscriptions.hub_filters(instance),
        )
        self._known = KnownDevices(hub.db)
        self._ingest = TelemetryIngest(hub.db, self.stats, self._known, self._ack, self._stop)
        self._presence = Presence(hub.registry, self._known.knows)
        self._twins = TwinRequests(hub.twins, self._connection.publish)
        self._desired = DesiredPushes(
            self._connection.publish_direct, self._connection.publish_many
        )
        #: direct method calls (``methods.invoke``)
        self.methods = DirectMethods(
            hub.registry, self._presence.wait_online, self._connection.publish, module_connected
        )
        self._control: queue.Queue[tuple[int, mqtt.MQTTMessage]] = queue.Queue()
        self._inflight = 0  # received and not yet acknowledged
        self._inflight_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._unsubscribe: list[Callable[[], None]] = []
        self._pruner = MessagePruner(
            hub.db,
            RetentionPolicy.from_settings(hub.settings.model_extra),
            on_removed=self.stats.count_expired,
            on_pass=self.stats.count_prune_pass,
            lease=Lease(hub.db, "message-retention"),
        )

    def start(self, timeout: float = 30.0) -> None:
        bus = self.hub.events
        self._unsubscribe = [
            bus.subscribe(events.TwinDesiredChanged, self._desired.on_desired_changed),
            bus.subscribe(events.DeviceCreated, lambda e: self._known.add(e.device_id)),
            bus.subscribe(events.DeviceDeleted, lambda e: self._known.discard(e.device_id)),
            bus.subscribe(events.DeviceDeleted, self._on_device_deleted),
        ]
        self._known.refresh()  # after subscribing: a device created meanwhile is not missed
        targets: list[tuple[Callable[[], None], str]] = [(self._ingest.run, "mqtt-ingest")]
        targets += [(self._control_worker, f"mqtt-control-{i}") for i in range(CONTROL_THREADS)]
        targets.append((self._desired.run, "mqtt-desired"))
        for target, name in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._connection.connect(timeout)
        self._pruner.start()

    def stop(self) -> None:
        if self.instance:
            self._leave_shared()
        self._pruner.stop()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._desired.close()  # the pusher sends what is queued, then ends
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        self._connection.disconnect()

    def _leave_shared(self, timeout: float = 10.0) -> None:
        """Before a process of several stops: leave the shared subscriptions, so the broker
        stops choosing this session (it would keep queueing a share for it if it never came
        back), and store what it already handed us, so nothing waits in a session nobody
        resumes."""
        self._connection.leave_shared(timeout / 2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._inflight_lock:
                pending = self._inflight
            if pending == 0 and self._connection.quiet_for() >= QUIET_S:
                return
            time.sleep(0.05)
        log.warning("stopping with %d messages not yet stored (the broker keeps them)", pending)

    def _ack(self, generation: int, mid: int) -> None:
        with self._inflight_lock:
            self._inflight -= 1
        self._connection.ack(generation, mid)

    def announce(self, topic: str, payload: bytes) -> None:
        """Publish a retained message (a device's presence) as the hub."""
        self._connection.publish_retained(topic, payload)

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish QoS 1 as the hub (cloud-to-device messages)."""
        self._connection.publish(topic, payload)

    def _on_device_deleted(self, event: events.DeviceDeleted) -> None:
        delete_messages(self.hub.db, event.device_id)
        self._presence.forget(event.device_id)

    def _on_message(self, generation: int, msg: mqtt.MQTTMessage) -> None:
        """Paho thread: telemetry to the ingest, everything else to the control threads."""
        with self._inflight_lock:
            self._inflight += 1
        try:
            topic = p.parse_topic(msg.topic)
        except p.ProtocolError:
            self.stats.malformed += 1
            self._ack(generation, msg.mid)
            return
        if topic.kind is p.Kind.TELEMETRY:
            self._ingest.receive(generation, msg.mid, topic, bytes(msg.payload))
            return
        self._control.put((generation, msg))

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

    def _handle_control(self, msg: mqtt.MQTTMessage) -> None:
        topic = p.parse_topic(msg.topic)
        payload = bytes(msg.payload)
        if topic.kind is p.Kind.PRESENCE:
            self._presence.update(topic.device_id, payload)
        elif topic.kind is p.Kind.TWIN_GET:
            self._twins.get(topic)
        elif topic.kind is p.Kind.TWIN_REPORTED:
            self._twins.report(topic, payload)
        elif topic.kind is p.Kind.METHOD_RESPONSE:
            self.methods.on_response(topic, payload)
