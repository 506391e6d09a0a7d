"""Schema migrations and durability of what the hub acknowledged."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from cloud_hub.db import alembic_config
from cloud_hub.hub import Hub, open_hub
from cloud_hub.models import Base
from cloud_hub.settings import HubSettings
from cloud_hub.tag_index import TAG_VALUES
from edgefleet.hubclient import HubClient, HubClientError
from tests.support.hub import running_hub


def test_migrations_have_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, heads


def _on_this_database(dialect: str) -> Any:
    """Alembic's include_object: models marked for another database (``info["dialect"]``) and
    the tables migrations keep outside the models (``tag_index.TAG_VALUES``) are left out."""

    def include(obj: Any, name: str | None, kind: str, reflected: bool, _other: Any) -> bool:
        table = obj if kind == "table" else getattr(obj, "table", None)
        if table is not None and table.name == TAG_VALUES.name:
            return False
        return obj.info.get("dialect", dialect) == dialect if hasattr(obj, "info") else True

    return include


def test_migrated_schema_matches_models(hub: Hub) -> None:
    with hub.db.engine.connect() as conn:
        include = _on_this_database(hub.db.dialect)
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": include}
        )
        diff = compare_metadata(context, Base.metadata)
        head = context.get_current_revision()
    assert diff == []
    assert head == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_reopening_keeps_data_and_is_idempotent(tmp_path: Path) -> None:
    settings = HubSettings(data_dir=tmp_path)
    first = open_hub(settings)
    first.registry.create_device("keep")
    first.twins.patch_desired("keep", None, {"a": 1})
    first.close()
    second = open_hub(settings)
    try:
        assert second.twins.get_twin("keep")["properties"]["desired"]["a"] == 1
        with second.db.engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        assert mode == "wal"
    finally:
        second.close()


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    acknowledged: list[int] = []
    stop = threading.Event()
    with running_hub(tmp_path) as hub:
        client = hub.client()
        client.create_device("victim")

        def writer() -> None:
            i = 0
            while not stop.is_set():
                try:
                    client.patch_twin("victim", {"properties": {"desired": {f"k{i}": i}}})
                except HubClientError:
                    return
                acknowledged.append(i)
                i += 1

        thread = threading.Thread(target=writer)
        thread.start()
        while len(acknowledged) < 50 and thread.is_alive():  # (a dead writer fails below)
            threading.Event().wait(0.02)
        os.kill(hub.process.pid, signal.SIGKILL)
        hub.process.wait(10)
        stop.set()
        thread.join(30)
        client.close()
    assert len(acknowledged) >= 50
    with running_hub(tmp_path) as again, HubClient(again.url, again.token) as client:
        desired = client.get_twin("victim")["properties"]["desired"]
        for i in acknowledged:
            assert desired.get(f"k{i}") == i
        assert desired["$version"] >= len(acknowledged) + 1
