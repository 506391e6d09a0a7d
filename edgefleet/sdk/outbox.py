"""A durable FIFO of outgoing MQTT publishes (SQLite, WAL).

``DeviceClient.send_message`` commits the message here before returning, so a message it accepted
survives a process kill and a broker outage; the row is deleted only when the broker's PUBACK
arrives. After a restart everything still in the outbox is published again (the hub suppresses
duplicates by message id).

A new outbox cannot be created on a full disk: it is then empty, and the first ``put`` creates it
once there is space (until then ``put`` raises the disk-full error), so a device whose disk is full
before its first start still starts.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from edgefleet.diskfull import connect_wal, rollback, unless_disk_full

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
"""


class Outbox:
    """Thread-safe; ``path=None`` keeps the queue in memory (not durable)."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = None
        if self.path is None:
            self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._db.execute(_SCHEMA)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        with self._lock:
            self._opened_locked()  # an existing one opens on a full disk too: it is still sent

    def _open_locked(self) -> sqlite3.Connection:
        """The connection, opened now if it is not yet (a new outbox on a full disk: the
        disk-full error is raised, and the next write tries again)."""
        if self._db is None:
            assert self.path is not None
            self._db = connect_wal(self.path, _SCHEMA)
        return self._db

    def _opened_locked(self) -> sqlite3.Connection | None:
        """The connection for reading and deleting; None while the outbox could not be created
        (it is empty then)."""
        return unless_disk_full(self._open_locked)

    def put(self, topic: str, payload: bytes) -> int:
        return self.put_many([(topic, payload)])[-1]

    def put_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        """Append in one transaction; returns the sequence numbers."""
        now = time.time()
        seqs: list[int] = []
        with self._lock:
            db = self._open_locked()
            db.execute("BEGIN IMMEDIATE")
            try:
                for topic, payload in items:
                    cur = db.execute(
                        "INSERT INTO outbox(topic, payload, created) VALUES (?, ?, ?)",
                        (topic, payload, now),
                    )
                    seqs.append(int(cur.lastrowid or 0))
                db.execute("COMMIT")
            except BaseException:
                rollback(db)
                raise
            self._changed.notify_all()
        return seqs

    def after(self, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` entries with a sequence number above ``seq``, oldest first."""
        with self._lock:
            db = self._opened_locked()
            if db is None:
                return []
            rows = db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def remove(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self._lock:
            db = self._opened_locked()
            if db is None:
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
                db.execute("COMMIT")
            except BaseException:  # a full disk: the rows stay and are removed later
                rollback(db)
                raise
            self._changed.notify_all()

    def wait_for_new(self, seq: int, timeout: float) -> None:
        """Block until an entry above ``seq`` may exist, or ``timeout`` passes."""
        with self._lock:
            db = self._db
            row = db.execute("SELECT MAX(seq) FROM outbox").fetchone() if db else (None,)
            if row[0] is not None and int(row[0]) > seq:
                return
            self._changed.wait(timeout)

    def __len__(self) -> int:
        with self._lock:
            if self._db is None:
                return 0
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
