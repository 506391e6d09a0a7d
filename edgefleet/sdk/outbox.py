"""A durable FIFO of outgoing MQTT publishes (SQLite, WAL).

``DeviceClient.send_message`` commits the message here before returning, so a message it accepted
survives a process kill and a broker outage; the row is deleted only when the broker's PUBACK
arrives. After a restart everything still in the outbox is published again (the hub suppresses
duplicates by message id).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from edgefleet.diskfull import connect_wal, rollback

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
        if self.path is None:
            self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._db.execute(_SCHEMA)
        else:  # opens on a full disk too: what it holds is still sent
            self._db = connect_wal(self.path, _SCHEMA)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def put(self, topic: str, payload: bytes) -> int:
        return self.put_many([(topic, payload)])[-1]

    def put_many(self, items: list[tuple[str, bytes]]) -> list[int]:
        """Append in one transaction; returns the sequence numbers."""
        now = time.time()
        seqs: list[int] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for topic, payload in items:
                    cur = self._db.execute(
                        "INSERT INTO outbox(topic, payload, created) VALUES (?, ?, ?)",
                        (topic, payload, now),
                    )
                    seqs.append(int(cur.lastrowid or 0))
                self._db.execute("COMMIT")
            except BaseException:
                rollback(self._db)
                raise
            self._changed.notify_all()
        return seqs

    def after(self, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` entries with a sequence number above ``seq``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    def remove(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
                self._db.execute("COMMIT")
            except BaseException:  # a full disk: the rows stay and are removed later
                rollback(self._db)
                raise
            self._changed.notify_all()

    def wait_for_new(self, seq: int, timeout: float) -> None:
        """Block until an entry above ``seq`` may exist, or ``timeout`` passes."""
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM outbox").fetchone()
            if row[0] is not None and int(row[0]) > seq:
                return
            self._changed.wait(timeout)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
