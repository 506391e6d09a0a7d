"""Database engine, sessions and migrations (SQLite with WAL by default, or PostgreSQL)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# An arbitrary constant: PostgreSQL advisory lock held while migrating (several hub processes).
_PG_MIGRATION_LOCK = 0x6564_6765


class Database:
    """Engine plus two session factories: ``read()`` and ``write()`` (one transaction each)."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            database = self.url.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            kwargs["pool_size"] = 8
            kwargs["max_overflow"] = 16
        else:
            kwargs["pool_size"] = 8
            kwargs["max_overflow"] = 16
            kwargs["pool_pre_ping"] = True
            kwargs["json_deserializer"] = pg_json_loads
        self.engine: Engine = create_engine(self.url, **kwargs)
        self._batch_engine: Engine | None = None
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._write_engine = self.engine.execution_options(sqlite_immediate=True)
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)
        self._migrated = threading.Event()
        self._lock = threading.Lock()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session:  # closing ends the (read-only) transaction
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction; on SQLite it starts with BEGIN IMMEDIATE (no upgrade deadlocks)."""
        with self._writer() as session, session.begin():
            yield session

    @contextmanager
    def read_conn(self) -> Iterator[Connection]:
        """A Core connection for reads (no ORM overhead on hot paths)."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write_conn(self) -> Iterator[Connection]:
        """A Core write transaction (BEGIN IMMEDIATE on SQLite); commits on success."""
        with self._write_engine.begin() as conn:
            yield conn

    @contextmanager
    def batch_write_conn(self) -> Iterator[Connection]:
        """``write_conn`` for one busy writer thread (the twin group commit). On PostgreSQL its
        connections come from a small pool of their own that skips the pre-ping (a round trip
        and a ``SELECT 1`` per transaction): a connection the server dropped fails one
        transaction, which the caller retries through ``write_conn``."""
        if self.is_sqlite:
            with self.write_conn() as conn:
                yield conn
            return
        with self._batch_pool().begin() as conn:
            yield conn

    def _batch_pool(self) -> Engine:
        with self._lock:
            if self._batch_engine is None:
                self._batch_engine = create_engine(
                    self.url, pool_size=1, max_overflow=4, json_deserializer=pg_json_loads
                )
            return self._batch_engine

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision shipped in this package."""
        from alembic import command

        with self.engine.connect() as connection:
            if self.dialect == "postgresql":
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                connection.commit()
            try:
                config = alembic_config(connection)
                command.upgrade(config, "head")
                connection.commit()
            finally:
                if self.dialect == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK}
                    )
                    connection.commit()
        self._migrated.set()

    def dispose(self) -> None:
        self.engine.dispose()
        if self._batch_engine is not None:
            self._batch_engine.dispose()


def alembic_config(connection: Connection | None = None) -> Any:
    """An Alembic Config pointing at the migrations inside the package."""
    from alembic.config import Config

    config = Config(str(Path(__file__).parent / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below), so the driver must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA cache_size=-32768")  # 32 MiB page cache per connection
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        # straight to the driver: a statement through SQLAlchemy costs more than BEGIN itself
        connection.connection.driver_connection.execute(  # type: ignore[union-attr]
            "BEGIN IMMEDIATE" if immediate else "BEGIN"
        )


_DECODER = json.JSONDecoder()


def pg_json_loads(data: bytes | bytearray | memoryview) -> Any:
    """psycopg's JSON/JSONB loader: the text PostgreSQL sends is UTF-8, so it skips the
    encoding detection of ``json.loads(bytes)`` (same values as ``json.loads``)."""
    return _DECODER.decode(bytes(data).decode())


def dbapi_url(sqlalchemy_url: str) -> str:
    """A PostgreSQL SQLAlchemy URL (any driver) as psycopg's own connect() takes it."""
    from sqlalchemy.engine import make_url

    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(False)
