"""Store-and-forward: the durable queue of messages waiting for the upstream link.

SQLite in WAL mode. A message is committed here before the module's publish is acknowledged;
it leaves the queue when it is handed to the upstream client's own durable outbox, when it is
older than its time to live (dropped and counted), or when the byte cap forces the oldest out
(evicted and counted). Forwarding order: route priority (0 first), then arrival.

On a full disk a write fails cleanly (the transaction is rolled back, the in-memory totals are
re-read) and what was committed before stays; an existing store opens on a full disk, a new one
is created by the first write once there is space (``edgefleet.diskfull``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgefleet.diskfull import connect_wal, rollback, unless_disk_full

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    priority INTEGER NOT NULL,
    module TEXT NOT NULL,
    bag TEXT NOT NULL,
    payload BLOB NOT NULL,
    enqueued REAL NOT NULL,
    expires REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_order ON queue(priority, seq);
CREATE INDEX IF NOT EXISTS queue_expiry ON queue(expires);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

COUNTERS = ("received", "forwarded", "expired", "evicted")
RECENT_EVICTIONS = 4096
_IN_CHUNK = 500  # sequence numbers per ``IN (...)``, well below SQLite's parameter limit


@dataclass(frozen=True)
class Stored:
    seq: int
    priority: int
    module: str
    bag: str
    payload: bytes
    enqueued: float
    expires: float


@dataclass(frozen=True)
class Item:
    """A message to store: its module, property bag (as a topic level), body, priority, TTL."""

    module: str
    bag: str
    payload: bytes
    priority: int
    ttl_secs: float


class MessageStore:
    """Thread-safe durable queue; ``max_bytes`` 0 means no cap."""

    def __init__(self, path: Path | str, max_bytes: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self._count = self._bytes = 0
        self._counters: dict[str, int] = {name: 0 for name in COUNTERS}
        # the last evicted sequence numbers: one of them the forwarder removes was being handed
        # over when the cap took it (the forwarder's window is far smaller than this)
        self._recently_evicted: deque[int] = deque(maxlen=RECENT_EVICTIONS)
        self._db: sqlite3.Connection | None = None
        with self._lock:
            self._opened_locked()  # on a full disk a new store is created by a later write

    def _open_locked(self) -> sqlite3.Connection:
        """The connection, opened now if it is not yet. A new store cannot be created on a full
        disk: the disk-full error is raised, and the next write tries again."""
        if self._db is None:
            self._db = connect_wal(self.path, _SCHEMA)
            self._reload_locked()
        return self._db

    def _opened_locked(self) -> sqlite3.Connection | None:
        """The connection for reading; None while the store could not be created."""
        return unless_disk_full(self._open_locked)

    # --- writing --------------------------------------------------------------------------------

    def put_many(self, items: list[Item], now: float | None = None) -> list[int]:
        """Commit ``items`` in one transaction (then evict the oldest beyond the byte cap)."""
        if not items:
            return []
        now = time.time() if now is None else now
        sizes = [len(it.payload) + len(it.bag) for it in items]
        rows = [
            (it.priority, it.module, it.bag, it.payload, now, now + it.ttl_secs, size)
            for it, size in zip(items, sizes, strict=True)
        ]
        added = sum(sizes)
        with self._lock:
            db = self._open_locked()
            with self._transaction_locked():
                db.executemany(
                    "INSERT INTO queue(priority, module, bag, payload, enqueued, expires, size)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                # one writer inside one transaction: AUTOINCREMENT numbers the rows consecutively
                last = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
                self._count += len(items)
                self._bytes += added
                self._bump("received", len(items))
                if self.max_bytes and self._bytes > self.max_bytes:
                    self._evict_locked()
            self.changed.notify_all()
        return list(range(last - len(items) + 1, last + 1))

    def _evict_locked(self) -> None:
        """Delete the oldest messages until the queue fits the byte cap."""
        db = self._open_locked()
        excess = self._bytes - self.max_bytes
        victims: list[tuple[int, int]] = []
        for seq, size in db.execute("SELECT seq, size FROM queue ORDER BY seq"):
            if excess <= 0:
                break
            victims.append((int(seq), int(size)))
            excess -= int(size)
        db.executemany("DELETE FROM queue WHERE seq = ?", [(s,) for s, _ in victims])
        self._count -= len(victims)
        self._bytes -= sum(size for _, size in victims)
        self._bump("evicted", len(victims))
        self._recently_evicted.extend(s for s, _ in victims)

    def _bump(self, name: str, n: int) -> None:
        if not n:
            return
        self._counters[name] += n
        self._open_locked().execute(
            "INSERT INTO counters(name, value) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, n),
        )

    @contextmanager
    def _transaction_locked(self) -> Iterator[None]:
        """One write transaction (the caller holds the lock); a failure rolls it back and
        re-reads the in-memory totals from the database (a full disk fails a commit cleanly:
        SQLite keeps what was committed before)."""
        db = self._open_locked()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            rollback(db)
            self._reload_locked()
            raise

    def _reload_locked(self) -> None:
        assert self._db is not None
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM queue").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])
        self._counters = {name: 0 for name in COUNTERS}
        for name, value in self._db.execute("SELECT name, value FROM counters"):
            self._counters[name] = int(value)

    # --- reading --------------------------------------------------------------------------------

    def expire(self, now: float | None = None) -> int:
        """Drop every message past its time to live; returns how many."""
        now = time.time() if now is None else now
        with self._lock:
            if self._count == 0 or self._db is None:
                return 0
            return self._expire_locked(now)

    def _expire_locked(self, now: float) -> int:
        with self._transaction_locked():
            db = self._open_locked()
            row = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM queue WHERE expires <= ?", (now,)
            ).fetchone()
            n, size = int(row[0]), int(row[1])
            if n:
                db.execute("DELETE FROM queue WHERE expires <= ?", (now,))
                self._count -= n
                self._bytes -= size
                self._bump("expired", n)
        return n

    def peek(self, limit: int) -> list[Stored]:
        """The next messages to forward: best priority first, then arrival order."""
        with self._lock:
            db = self._db  # not created yet (a full disk): nothing stored
            if db is None:
                return []
            rows = db.execute(
                "SELECT seq, priority, module, bag, payload, enqueued, expires FROM queue"
                " ORDER BY priority, seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [Stored(int(r[0]), int(r[1]), r[2], r[3], bytes(r[4]), r[5], r[6]) for r in rows]

    def remove(self, seqs: list[int]) -> None:
        """Forget forwarded messages (counted as forwarded). One the cap evicted while it was
        being handed over is gone already: it was forwarded all the same, so it no longer
        counts as evicted (nothing else deletes concurrently: expiry runs in the forwarder's
        own thread)."""
        if not seqs:
            return
        with self._lock, self._transaction_locked():
            db = self._open_locked()
            removed = size = 0
            for start in range(0, len(seqs), _IN_CHUNK):
                chunk = seqs[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                row = db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM queue WHERE seq IN ({marks})",
                    chunk,
                ).fetchone()
                db.execute(f"DELETE FROM queue WHERE seq IN ({marks})", chunk)
                removed += int(row[0])
                size += int(row[1])
            in_flight = set(seqs).intersection(self._recently_evicted)
            if in_flight:
                kept = [seq for seq in self._recently_evicted if seq not in in_flight]
                self._recently_evicted.clear()
                self._recently_evicted.extend(kept)
            evicted_meanwhile = len(in_flight)
            self._count -= removed
            self._bytes -= size
            self._bump("forwarded", removed + evicted_meanwhile)
            self._bump("evicted", -evicted_meanwhile)

    def wait(self, timeout: float) -> None:
        with self._lock:
            if self._count == 0:
                self.changed.wait(timeout)

    def stats(self) -> dict[str, int]:
        """Counters for the agent's reported properties (persisted across restarts)."""
        with self._lock:
            return {
                "queuedMessages": self._count,
                "queuedBytes": self._bytes,
                "maxBytes": self.max_bytes,
                "receivedMessages": self._counters["received"],
                "forwardedMessages": self._counters["forwarded"],
                "expiredMessages": self._counters["expired"],
                "evictedMessages": self._counters["evicted"],
            }

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
