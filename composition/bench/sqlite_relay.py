"""The same-hop baseline of ``bench routes``: a minimal paho relay that does what the edge hub
does for a routed message, and nothing else.

It subscribes (QoS 1, manual acknowledgement) to a topic, appends every message it receives to
SQLite (WAL, synchronous=NORMAL, as the hub's store) in one transaction per turn of its network
loop (the hub's group commit), acknowledges the batch only after that commit, and republishes
each message (QoS 1) under another prefix. Publisher -> mosquitto -> relay -> mosquitto ->
subscriber is then the hop count of module -> edge hub -> module with the same durability.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet.diskfull import connect_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    received REAL NOT NULL
);
"""


class SqliteRelay:
    """Relays ``<in_prefix>/...`` to ``<out_prefix>/...`` through a SQLite append."""

    def __init__(self, port: int, db_path: Path, in_prefix: str, out_prefix: str) -> None:
        self._db = connect_wal(db_path, _SCHEMA)
        self._in, self._out = in_prefix, out_prefix
        self._pending: list[mqtt.MQTTMessage] = []
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-relay", manual_ack=True
        )
        self._client.max_inflight_messages_set(1000)
        self._client.on_message = lambda _c, _u, msg: self._pending.append(msg)
        self._client.connect("127.0.0.1", port)
        sock = self._client.socket()
        if isinstance(sock, socket.socket):  # as asyncio's transports (the edge hub) do
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client.subscribe(f"{in_prefix}/#", 1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-relay", daemon=True)
        self.relayed = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.disconnect()
        self._db.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._client.loop(0.01)
            if self._pending:
                self._flush()

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany(
            "INSERT INTO messages(topic, payload, received) VALUES (?, ?, ?)",
            [(m.topic, m.payload, now) for m in batch],
        )
        self._db.execute("COMMIT")
        for msg in batch:  # acknowledged only once stored
            self._client.ack(msg.mid, msg.qos)
        for msg in batch:
            self._client.publish(self._out + msg.topic[len(self._in) :], msg.payload, qos=1)
        self.relayed += len(batch)
