"""Throw-away PostgreSQL databases for tests (role edgefleet/edgefleet on 127.0.0.1)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

PG_ADMIN_URL = os.environ.get(
    "EDGEFLEET_TEST_PG", "postgresql://edgefleet:edgefleet@127.0.0.1:5432/edgefleet_test"
)


def _server_url() -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0]


@contextmanager
def temporary_database(prefix: str = "edgefleet_t") -> Iterator[str]:
    """Create a uniquely named database; yields its SQLAlchemy URL; drops it afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _server_url().replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    try:
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
