"""A device's MQTT connection: connect, reconnect with backoff and full jitter, presence.

``DeviceConnection.run`` is the device client's network thread. Every connection attempt gets a
fresh paho client (see ``_new_mqtt``); a successful CONNACK subscribes to the device's topics,
announces presence and bumps the connection number that the outbox sender adopts.
"""

from __future__ import annotations

import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edgefleet import protocol as p


def _no_op(*_args: Any) -> None:
    return None


@dataclass(frozen=True)
class ConnectionSettings:
    device_id: str
    host: str
    port: int
    client_id: str
    symmetric_key: str | None
    key_slots: list[str]  # tried in turn after a refused connection
    username: str | None
    password: str | None
    ssl_context: ssl.SSLContext | None
    keepalive: int
    max_inflight: int
    backoff: tuple[float, float]  # (base, cap) in seconds
    announce_presence: bool


class DeviceConnection:
    """The current paho client and the events the rest of the device client waits on.

    ``on_message`` gets every inbound publish, ``on_connected`` runs after each successful
    connect (on paho's thread: it must not block), ``on_lost`` after each connection ends.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        on_message: Callable[[mqtt.MQTTMessage], None],
        on_connected: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.settings = settings
        self._on_message_cb = on_message
        self._on_connected_cb = on_connected
        self._on_lost_cb = on_lost
        self._slot_index = 0
        self.conn = ""  # id of the current connection attempt (presence payloads carry it)
        self.mqtt = self._new_mqtt()
        # (number, client) of the newest successful connect. The outbox sender publishes only on
        # the connection it has adopted: a new number means "resend the outbox from its start";
        # publishing on a client it has not adopted could overtake the older messages that the
        # resend is about to repeat (the hub keeps the first copy of a message id).
        self.current: tuple[int, mqtt.Client | None] = (0, None)
        self.connected = threading.Event()
        self.stop = threading.Event()
        self.last_error: str | None = None
        self.last_ack = 0.0  # monotonic time of the broker's last PUBACK, on any connection

    def _credentials(self) -> tuple[str | None, str | None]:
        s = self.settings
        if s.username is not None:
            return s.username, s.password
        if s.symmetric_key is not None:
            slot = s.key_slots[self._slot_index % len(s.key_slots)]
            return (
                p.mqtt_username(s.device_id, slot),
                p.mqtt_password(s.device_id, s.symmetric_key),
            )
        return None, None

    def _new_mqtt(self) -> mqtt.Client:
        """A fresh paho client for every connection attempt: the outbox, not paho's in-memory
        queue, is what gets resent after a reconnect (paho can strand its queued messages)."""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.settings.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        client.max_inflight_messages_set(self.settings.max_inflight + 32)
        client.max_queued_messages_set(0)
        if self.settings.ssl_context is not None:
            client.tls_set_context(self.settings.ssl_context)
        # Our own network thread runs loop(); without a socket-write callback paho would write
        # from the publishing thread directly, racing that loop on the (TLS) socket. With it,
        # publishes only queue and wake the loop through paho's socket pair.
        client.on_socket_register_write = _no_op
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, *rest: Any) -> None:
        self.last_ack = time.monotonic()

    def _presence(self, state: str) -> bytes:
        return p.presence_payload(state, self.settings.client_id, self.conn)

    def run(self) -> None:
        """The network thread: connect, run paho's loop, back off and reconnect until ``stop``."""
        attempt = 0
        first = True
        s = self.settings
        while not self.stop.is_set():
            if not first:
                old, self.mqtt = self.mqtt, self._new_mqtt()
                try:
                    old.disconnect()
                except Exception:  # noqa: BLE001 - already closed
                    pass
            first = False
            username, password = self._credentials()
            if username is not None:
                self.mqtt.username_pw_set(username, password)
            self.conn = uuid.uuid4().hex[:12]
            self.mqtt.will_set(
                p.presence_topic(s.device_id), self._presence(p.OFFLINE), qos=1, retain=True
            )
            try:
                self.mqtt.connect(s.host, s.port, s.keepalive)
            except (OSError, ssl.SSLError, ValueError) as exc:
                self.last_error = str(exc) or type(exc).__name__
            else:
                while not self.stop.is_set():
                    rc = self.mqtt.loop(timeout=0.2)
                    if self.connected.is_set():
                        attempt = 0
                    if rc != mqtt.MQTT_ERR_SUCCESS:
                        break
                self._set_disconnected()
            if self.stop.is_set():
                break
            attempt += 1
            base, cap = s.backoff
            delay = random.uniform(0, min(cap, base * 2 ** min(attempt, 16)))  # full jitter
            self.stop.wait(max(0.05, delay))
        self._set_disconnected()

    def _set_disconnected(self) -> None:
        if self.connected.is_set():
            self.connected.clear()
        self._on_lost_cb()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        if reason.is_failure:
            self.last_error = f"connection refused: {reason}"
            self._slot_index += 1  # auto: try the other key slot's user name next time
            return
        self.last_error = None
        device_id = self.settings.device_id
        for topic in p.device_subscriptions(device_id):
            client.subscribe(topic, qos=1)
        if self.settings.announce_presence:
            client.publish(
                p.presence_topic(device_id), self._presence(p.ONLINE), qos=1, retain=True
            )
        self.current = (self.current[0] + 1, client)  # one assignment: read atomically
        self.connected.set()
        self._on_connected_cb()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._on_message_cb(msg)

    def publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        """QoS 1 on the current client (requests and answers; telemetry goes through the outbox)."""
        return self.mqtt.publish(topic, payload, qos=1)

    def say_offline(self, timeout: float) -> None:
        """Publish offline presence (retained) and wait for it, when connected."""
        if not self.connected.is_set():
            return
        try:
            info = self.mqtt.publish(
                p.presence_topic(self.settings.device_id),
                self._presence(p.OFFLINE),
                qos=1,
                retain=True,
            )
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            pass

    def close(self) -> None:
        """Stop the network thread's loop and disconnect."""
        self.stop.set()
        try:
            self.mqtt.disconnect()
        except Exception:  # noqa: BLE001 - already down
            pass
