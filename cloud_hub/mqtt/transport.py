"""The hub's paho connection to the broker: one privileged client (user ``$edgefleet-hub``),
persistent session, QoS 1, manual acknowledgements.

Every connect and disconnect starts a new generation: a message is acknowledged with the
generation it arrived in, and an acknowledgement of an older generation is dropped (its message
id belonged to a connection that is gone; the broker redelivers the message on the new one).

Publishing: with the embedded broker every hub publish goes to the broker's in-process queue
(``direct_publish``, no socket); otherwise, or when that fails, over this client at QoS 1.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cloud_hub.broker.base import Endpoint
from edgefleet import protocol as p

log = logging.getLogger(__name__)

DirectPublish = Callable[[list[tuple[str, bytes]]], bool]
"""Hand messages to an in-process broker; False when it cannot take them."""

MessageHandler = Callable[[int, mqtt.MQTTMessage], None]
"""Called on paho's network thread with (generation, message)."""


class HubConnection:
    """The paho client of the hub: connect, subscribe to the hub topics, acknowledge, publish."""

    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        on_message: MessageHandler,
        direct_publish: DirectPublish | None = None,
        filters: list[str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._filters = list(filters or p.HUB_SUBSCRIPTIONS)
        self._handler = on_message
        self._direct = direct_publish
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
        self._client.enable_logger(log)
        self._generation = 0
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._last_message = time.monotonic()
        self._left = threading.Event()

    def connect(self, timeout: float) -> None:
        """Start the network loop and wait for the first connection (RuntimeError after
        ``timeout`` seconds); later reconnects happen by themselves."""
        self._client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(timeout):
            raise RuntimeError(
                f"hub service client cannot connect to the broker at "
                f"{self.endpoint.host}:{self.endpoint.port}"
            )

    def leave_shared(self, timeout: float) -> None:
        """Unsubscribe from the shared subscriptions (waits for the broker's UNSUBACK)."""
        shared = [f for f in self._filters if f.startswith("$share/")]
        if not shared or not self._connected.is_set():
            return
        self._client.on_unsubscribe = lambda *_args: self._left.set()
        self._client.unsubscribe(shared)
        if not self._left.wait(timeout):
            log.warning("the broker did not confirm leaving the shared subscriptions")

    def quiet_for(self) -> float:
        """Seconds since the last message arrived."""
        return time.monotonic() - self._last_message

    def disconnect(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def ack(self, generation: int, mid: int) -> None:
        """Acknowledge a message received in ``generation`` (dropped if that connection is gone)."""
        with self._lock:
            current = self._generation
        if generation == current and mid:
            self._client.ack(mid, 1)

    def publish(self, topic: str, payload: bytes) -> None:
        self.publish_many([(topic, payload)])

    def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish in order: to the in-process broker if there is one, else over MQTT."""
        if self._direct is not None:
            try:
                if self._direct(messages):
                    return
            except Exception:  # noqa: BLE001 - fall back to the service client
                log.exception("direct publish failed; publishing over MQTT")
        for topic, payload in messages:
            self._client.publish(topic, payload, qos=1)

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """A retained QoS 1 publish over MQTT (presence the hub publishes for a device)."""
        self._client.publish(topic, payload, qos=1, retain=True)

    def publish_direct(self, messages: list[tuple[str, bytes]]) -> bool:
        """Hand messages to the in-process broker; False when there is none or it refused."""
        return self._direct is not None and self._direct(messages)

    # -- paho callbacks (network thread) --------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("broker refused the hub service client: %s", reason)
            return
        with self._lock:
            self._generation += 1
        client.subscribe([(topic, 1) for topic in self._filters])
        self._connected.set()
        log.info("hub service client connected to %s:%s", self.endpoint.host, self.endpoint.port)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._connected.clear()
        with self._lock:
            self._generation += 1  # acks of the old connection's message ids are void

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            generation = self._generation
        self._last_message = time.monotonic()
        self._handler(generation, msg)
