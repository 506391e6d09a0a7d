"""Telemetry ingest: batches of device-to-cloud messages written to the ``messages`` table.

The paho thread queues each telemetry PUBLISH; one writer thread takes what waits (up to
``BATCH_MAX``, waiting at most ``BATCH_WAIT_S`` for more) and inserts it in one transaction
(group commit). Duplicates are ignored by the unique (device, message id) key, and RETURNING
counts what was really inserted. Every PUBLISH of a batch is acknowledged only after its commit,
so a hub crash leaves un-acked messages with the broker, which redelivers them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from cloud_hub.db import Database
from cloud_hub.models import DeviceRow
from cloud_hub.mqtt.stats import Stats
from cloud_hub.mqtt.tables import MessageRow
from edgefleet import protocol as p
from edgefleet.utctime import utc_now

log = logging.getLogger(__name__)

BATCH_MAX = 2000
BATCH_WAIT_S = 0.01
ACTIVITY_EVERY_S = 1.0
UNKNOWN_RECHECK_S = 5.0
"""A device's ``lastActivityTime`` is written at most this often by the ingest."""

Ack = Callable[[int, int], None]
"""Acknowledge (generation, message id) to the broker."""


@dataclass
class Incoming:
    """One telemetry message waiting for the writer, with what acknowledges it."""

    generation: int
    mid: int
    device_id: str
    module_id: str
    message: p.Message
    enqueued: datetime


class KnownDevices:
    """The ids of the registered devices, loaded at start and kept by registry events (telemetry
    of an unknown device is dropped; presence of one is not written to the registry).

    Another hub process on the same database creates devices this one hears no event of: an id
    not known here is looked up in the database before it is refused (a miss is remembered for
    ``UNKNOWN_RECHECK_S``, so a stream from an unregistered id costs one query per period).
    """

    def __init__(self, db: Database, clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._ids: set[str] = set()
        self._frozen: frozenset[str] | None = frozenset()
        self._lock = threading.Lock()
        self._missing: dict[str, float] = {}  # id -> when it may be looked up again
        self._clock = clock

    def refresh(self) -> None:
        with self._db.read() as session:
            ids = set(session.scalars(select(DeviceRow.device_id)))
        with self._lock:
            self._ids, self._frozen = ids, None

    def add(self, device_id: str) -> None:
        with self._lock:
            self._ids.add(device_id)
            self._frozen = None

    def discard(self, device_id: str) -> None:
        with self._lock:
            self._ids.discard(device_id)
            self._frozen = None

    def confirm(self, device_ids: Iterable[str]) -> None:
        """Look up the ids not known here (created by another hub process, maybe)."""
        now = self._clock()
        with self._lock:
            unknown = {
                d for d in device_ids if d not in self._ids and self._missing.get(d, 0.0) <= now
            }
        if not unknown:
            return
        with self._db.read() as session:
            found = set(
                session.scalars(select(DeviceRow.device_id).where(DeviceRow.device_id.in_(unknown)))
            )
        with self._lock:
            if found:
                self._ids |= found
                self._frozen = None
            for device_id in unknown - found:
                self._missing[device_id] = now + UNKNOWN_RECHECK_S
            if len(self._missing) > 10_000:  # ids a broker let in without a registration
                self._missing = {d: t for d, t in self._missing.items() if t > now}

    def knows(self, device_id: str) -> bool:
        """Whether ``device_id`` is registered (looked up when not known here)."""
        if device_id not in self._ids:
            self.confirm((device_id,))
        return device_id in self._ids

    def snapshot(self) -> frozenset[str]:
        """An immutable copy, rebuilt at most once per change (bulk creations are one burst)."""
        with self._lock:
            if self._frozen is None:
                self._frozen = frozenset(self._ids)
            return self._frozen

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._ids


def message_rows(
    batch: Iterable[Incoming], known: frozenset[str]
) -> tuple[list[dict[str, Any]], int]:
    """The ``messages`` rows of a batch's known devices, and how many messages were refused."""
    rows: list[dict[str, Any]] = []
    refused = 0
    for item in batch:
        if item.device_id not in known:
            refused += 1
            continue
        m = item.message
        rows.append(
            {
                "device_id": item.device_id,
                "module_id": item.module_id,
                "message_id": m.message_id[:128],
                "enqueued_at": item.enqueued,
                "properties": {"system": m.system_properties(), "custom": m.custom_properties},
                "body": m.data,
            }
        )
    return rows, refused


def commit_latencies(batch: Iterable[Incoming], committed: float) -> list[float]:
    """Creation-to-commit seconds of the messages whose ``$.ctime`` is a unix time."""
    latencies: list[float] = []
    for item in batch:
        ctime = item.message.creation_time
        if ctime and ctime[0].isdigit():
            try:
                latencies.append(committed - float(ctime))
            except ValueError:
                pass
    return latencies


class TelemetryIngest:
    """The telemetry queue and its writer thread (``run``, until ``stop`` is set)."""

    def __init__(
        self, db: Database, stats: Stats, known: KnownDevices, ack: Ack, stop: threading.Event
    ) -> None:
        self._db = db
        self._stats = stats
        self._known = known
        self._ack = ack
        self._stop = stop
        self._queue: queue.Queue[Incoming] = queue.Queue()
        self._activity: dict[str, float] = {}  # device id -> monotonic time of the last touch

    def receive(self, generation: int, mid: int, topic: p.Topic, payload: bytes) -> None:
        """A telemetry PUBLISH (paho thread): queue it, or refuse (and ack) an oversized one."""
        if len(payload) > p.MAX_MESSAGE_BYTES:
            self._stats.rejected_too_large += 1
            log.info("rejected %d-byte message from %s", len(payload), topic.device_id)
            self._ack(generation, mid)
            return
        message = p.Message.from_property_bag(payload, topic.properties)
        if not message.message_id:
            message.message_id = "gen-" + uuid.uuid4().hex
        self._queue.put(
            Incoming(
                generation,
                mid,
                topic.device_id,
                topic.module_id or "",
                message,
                utc_now(),
            )
        )

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + BATCH_WAIT_S
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            delay = 0.2
            while True:
                try:
                    self.store(batch)
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

    def store(self, batch: list[Incoming]) -> None:
        """Insert a batch in one transaction and touch its devices' ``lastActivityTime``."""
        self._known.confirm({item.device_id for item in batch})
        rows, refused = message_rows(batch, self._known.snapshot())
        self._stats.rejected_unknown_device += refused
        if not rows:
            return
        insert = postgresql.insert if self._db.dialect == "postgresql" else sqlite.insert
        # RETURNING counts the rows really inserted (an ORM bulk insert has no rowcount, and a
        # batched executemany's rowcount is not reliable): duplicates are what is left.
        stmt = (
            insert(MessageRow)
            .on_conflict_do_nothing(index_elements=["device_id", "message_id"])
            .returning(MessageRow.seq)
        )
        now = time.monotonic()
        touch = sorted(
            {
                r["device_id"]
                for r in rows
                if now - self._activity.get(r["device_id"], 0) > ACTIVITY_EVERY_S
            }
        )
        with self._db.write() as session:
            inserted = len(session.connection().execute(stmt, rows).all())
            if touch:
                session.execute(
                    update(DeviceRow)
                    .where(DeviceRow.device_id.in_(touch))
                    .values(last_activity_time=utc_now())
                )
        committed = time.time()
        for device_id in touch:
            self._activity[device_id] = now
        self._stats.latencies.extend(commit_latencies(batch, committed))
        self._stats.count_batch(committed, inserted, len(rows))
