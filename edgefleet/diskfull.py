"""A full disk, as file and SQLite writes report it, and SQLite WAL databases that open on one.

Opening a WAL database needs its shared-memory index file (``-shm``) to grow, which fails on a
full disk (SQLITE_IOERR_SHMSIZE) although the data is readable. ``connect_wal`` then opens it in
exclusive locking mode, where SQLite keeps that index in memory: what is stored stays readable and
writes fail cleanly (SQLITE_FULL) until there is space again.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("edgefleet.diskfull")

SQLITE_FULL = 13
SQLITE_IOERR_SHMSIZE = 4874
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says the file system has no room left."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if isinstance(current, sqlite3.Error):
            code = getattr(current, "sqlite_errorcode", None)
            if code is not None and (code & 0xFF == SQLITE_FULL or code == SQLITE_IOERR_SHMSIZE):
                return True
        current = current.__cause__ or current.__context__
    return False


def connect_wal(path: Path | str, schema: str, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection (autocommit, any thread) to a WAL database with ``schema`` applied;
    synchronous=NORMAL: a committed row survives a process kill. On a full disk an existing
    database opens in exclusive locking mode (see the module docstring); a new one cannot be
    created and the disk-full error is raised."""
    try:
        return _connect(path, schema, timeout, exclusive=False)
    except sqlite3.Error as exc:
        if not is_disk_full(exc):
            raise
        reason = exc
    db = _connect(path, schema, timeout, exclusive=True)
    log.warning("%s: disk full at open (%s); opened with its WAL index in memory", path, reason)
    return db


def _connect(path: Path | str, schema: str, timeout: float, exclusive: bool) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=timeout)
    try:
        if exclusive:
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db


def rollback(db: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already done so (it may after
    SQLITE_FULL): a ROLLBACK without a transaction would hide the original error."""
    if db.in_transaction:
        db.execute("ROLLBACK")


def unless_disk_full(open_db: Callable[[], sqlite3.Connection]) -> sqlite3.Connection | None:
    """``open_db()``, or None when the disk is too full to create the database (a store that
    does not exist yet is empty; its first write after space returns creates it)."""
    try:
        return open_db()
    except sqlite3.Error as exc:
        if not is_disk_full(exc):
            raise
        return None
