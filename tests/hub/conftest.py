"""Fixtures of the hub tests: every service-level test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from cloud_hub.hub import Hub, open_hub
from cloud_hub.models import Base
from cloud_hub.settings import HubSettings
from tests.support.pg import temporary_database


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with temporary_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hub]:
    """Hub services on a fresh SQLite file, or on the session's PostgreSQL database, emptied."""
    if request.param == "sqlite":
        settings = HubSettings(data_dir=tmp_path / "hub")
    else:
        url = request.getfixturevalue("pg_url")
        settings = HubSettings(data_dir=tmp_path / "hub", database_url=url)
    services = open_hub(settings)
    if request.param == "postgresql":
        tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
        with services.db.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    try:
        yield services
    finally:
        services.close()
