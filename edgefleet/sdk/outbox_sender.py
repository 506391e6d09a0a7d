"""The device client's outbox thread: telemetry from the durable outbox, in order, at least once.

``send_message`` only commits to the outbox. This thread publishes the outbox's rows oldest first
with QoS 1 on the connection it has adopted (at most ``max_inflight`` unacknowledged) and deletes
rows once their PUBACK arrived. On every new connection it starts again from the outbox's first
row, so whatever was in flight on the old connection is sent again before anything newer.
"""

from __future__ import annotations

import logging
import time

import paho.mqtt.client as mqtt

from edgefleet import protocol as p
from edgefleet.sdk.device_connection import DeviceConnection
from edgefleet.sdk.outbox import Outbox

log = logging.getLogger(__name__)


def outbox_items(
    device_id: str, messages: list[p.Message], module_id: str | None
) -> list[tuple[str, bytes]]:
    """(topic, body) of each telemetry message; raises ValueError for one over 256 KiB."""
    items: list[tuple[str, bytes]] = []
    for msg in messages:
        if len(msg.data) > p.MAX_MESSAGE_BYTES:
            raise ValueError(f"message of {len(msg.data)} bytes exceeds 256 KiB")
        items.append((msg.telemetry_topic(device_id, module_id), msg.data))
    return items


class OutboxSender:
    def __init__(self, outbox: Outbox, link: DeviceConnection, max_inflight: int) -> None:
        self.outbox = outbox
        self._link = link
        self._max_inflight = max_inflight
        self._adopted = 0  # number of the connection publishes go out on
        # Publishes handed to paho on the adopted connection and not yet acknowledged:
        # (outbox seq, paho info). After a reconnect (or in a new process) the outbox is resent.
        self._inflight: list[tuple[int, mqtt.MQTTMessageInfo]] = []
        self._last_submitted = 0
        self._unremoved: list[int] = []  # acknowledged rows whose delete failed (a full disk)

    def enqueue(
        self, device_id: str, messages: list[p.Message], module_id: str | None
    ) -> list[str]:
        """Commit messages to the outbox in one transaction; returns their message ids."""
        self.outbox.put_many(outbox_items(device_id, messages, module_id))
        return [m.message_id for m in messages]

    def flush_acked(self) -> None:
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
        if done:
            self._inflight = pending
        done = self._unremoved + done
        if not done:
            return
        try:
            self.outbox.remove(done)
        except Exception:  # noqa: BLE001 - a full disk or shutdown: tried again next step
            log.debug("outbox remove failed", exc_info=True)
            self._unremoved = done
            return
        self._unremoved = []

    def run(self) -> None:
        """The outbox thread, until the connection's ``stop`` is set."""
        while not self._link.stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the outbox thread must not die
                log.exception("outbox loop error")
                self._link.stop.wait(0.5)

    def step(self) -> None:
        self.flush_acked()
        link = self._link
        if not link.connected.wait(0.2):
            return
        number, client = link.current
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
            if not link.connected.is_set() or link.current[0] != number:
                break
            info = client.publish(topic, payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                break
            self._inflight.append((seq, info))
            self._last_submitted = seq
