"""Leases: a periodic job of the hub runs in one hub process at a time.

Several hub processes may share one PostgreSQL (docs/scale-out.md). Jobs that sweep the whole
database (the retention pruner, rollout steps, deployment metrics and history housekeeping)
would be correct in every process, but wasted work in all but one. A ``Lease`` names such a job;
the process holding it runs the job, the others skip their turn.

On PostgreSQL a lease is a session-level advisory lock held on a connection of its own: it goes
with that connection, so a process that dies (``kill -9`` included) frees it when the server
sees the socket close, and another process takes it at its next try; a holder whose connection
broke no longer holds it. A lease never blocks: a try that loses answers at once. SQLite serves
one hub process, which always holds its leases.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from cloud_hub.db import Database, dbapi_url

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """The advisory lock key of a lease name: a stable signed 64-bit integer."""
    digest = hashlib.sha256(b"edgefleet lease " + name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _ProcessLease:
    """The lease as this process holds it: one connection, shared by every handle."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.key = lock_key(name)
        self.lock = threading.Lock()  # one try at a time; other leases' tries do not wait
        self.handles = 0
        self.held = False
        self.conn: Any = None

    def check_or_take(self) -> bool:
        with self.lock:
            try:
                return self._check_or_take()
            except Exception as exc:  # noqa: BLE001 - the database is away: not held
                if self.held:
                    log.warning("lease %s lost: %s", self.name, exc)
                self.drop()
                return False

    def _check_or_take(self) -> bool:
        import psycopg

        if self.conn is None:
            self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        if self.held:
            self.conn.execute("SELECT 1")  # the lock lives as long as this connection
            return True
        row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        self.held = bool(row and row[0])
        if self.held:
            log.info("lease %s taken", self.name)
        return self.held

    def drop(self) -> None:
        self.held = False
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is broken already
                pass


# Every handle of one lease in this process shares one advisory lock: two parts of one process
# (or two hubs one test opens) never shut each other out. _PROCESS_LOCK guards the table only.
_PROCESS_LEASES: dict[tuple[str, str], _ProcessLease] = {}
_PROCESS_LOCK = threading.Lock()


class Lease:
    """A handle on one named lease (thread-safe); ``close`` it when its job stops. The lease
    is given up when the last handle of this process closes."""

    def __init__(self, db: Database, name: str) -> None:
        self.name = name
        self._shared: _ProcessLease | None = None
        self._always = db.dialect != "postgresql"
        if self._always:
            return
        url = dbapi_url(db.url.render_as_string(hide_password=False))
        with _PROCESS_LOCK:
            shared = _PROCESS_LEASES.get((url, name))
            if shared is None:
                shared = _PROCESS_LEASES[(url, name)] = _ProcessLease(url, name)
            shared.handles += 1
        self._shared = shared

    def held(self) -> bool:
        """Whether this process holds the lease now; takes it when it is free (never after
        ``close``)."""
        if self._always:
            return True
        shared = self._shared
        if shared is None:
            return False
        return shared.check_or_take()

    def close(self) -> None:
        """Let go of this handle; the last one of the process gives the lease up."""
        shared, self._shared = self._shared, None
        if shared is None:
            return
        with _PROCESS_LOCK:
            shared.handles -= 1
            last = shared.handles == 0
            if last:
                _PROCESS_LEASES.pop((shared.url, shared.name), None)
        if last:
            with shared.lock:
                shared.drop()
