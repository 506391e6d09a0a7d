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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
)
"""


class Outbox:
    """Thread-safe; ``path=None`` keeps the queue in memory (not durable)."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            ":memory:" if self.path is None else str(self.path),
            check_same_thread=False,
            isolation_level=None,
            timeout=30,
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL survives a process kill (the WAL is written before commit returns); FULL would
        # also survive a power loss at a large cost per message.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
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
                self._db.execute("ROLLBACK")
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
            self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            self._db.execute("COMMIT")
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
