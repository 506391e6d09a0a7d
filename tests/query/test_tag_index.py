"""The tag index (migration 0007) and the merge of GROUP BY parts: properties and migrations."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from cloud_hub.db import Database, alembic_config
from cloud_hub.query import UNDEFINED, execute, parse_query
from cloud_hub.tag_index import sqlite_paths
from cloud_hub.twin_groups import merge_groups
from cloud_hub.twin_query import Queries
from tests.support.pg import temporary_database

KEYS = st.text(st.sampled_from("aZ09_-. '\"\\[]$é\x7f"), min_size=1, max_size=4)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, 1.0, -0.0, 2.5, 10**20, "1", "", "a", "A"]),
    st.dictionaries(st.sampled_from(["k", "j"]), st.sampled_from([1, 1.0, "x"]), max_size=2),
    st.lists(st.sampled_from([1, "x"]), max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(KEYS, min_size=1, max_size=3))
def test_predicted_paths_include_the_one_json_tree_stores(keys: list[str]) -> None:
    doc: Any = "leaf"
    for key in reversed(keys):
        doc = {key: doc}
    with sqlite3.connect(":memory:") as conn:
        stored = conn.execute(
            "SELECT fullkey FROM json_tree(?) WHERE type = 'text'", (json.dumps(doc),)
        ).fetchall()
    predicted = sqlite_paths(keys)
    if predicted is not None:
        assert [row[0] for row in stored][0] in predicted
    else:
        assert any(json.dumps(k) != f'"{k}"' or not k.isprintable() for k in keys)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(VALUES, st.booleans()), max_size=12), st.booleans())
def test_merging_parts_by_json_text_gives_the_evaluator_rows(
    fleet: list[tuple[Any, bool]], group: bool
) -> None:
    """Parts split by JSON text (what the database groups by) merge into the evaluator's groups
    (``1`` with ``1.0``, objects by content, a missing value apart from null)."""
    twins: list[dict[str, Any]] = [
        {"tags": {"v": value}} if present else {"tags": {}} for value, present in fleet
    ]
    text_query = (
        "SELECT tags.v AS v, COUNT() AS n FROM devices GROUP BY tags.v"
        if group
        else "SELECT COUNT() AS n FROM devices"
    )
    query = parse_query(text_query)
    parts: dict[str, tuple[list[Any], int]] = {}
    for twin in twins:
        value = twin["tags"].get("v", UNDEFINED)
        split = "u" if value is UNDEFINED else "j" + json.dumps(value)
        first, count = parts.get(split if group else "", ([value] if group else [], 0))
        parts[split if group else ""] = (first, count + 1)
    assert merge_groups(query, list(parts.values())) == execute(query, twins)


def _migrate(url: str, revision: str, down: bool = False) -> None:
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            config = alembic_config(conn)
            (command.downgrade if down else command.upgrade)(config, revision)
            conn.commit()
    finally:
        db.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migration_indexes_existing_twins_and_downgrades(dialect: str, tmp_path: Path) -> None:
    def check(url: str) -> None:
        _migrate(url, "0006")
        db = Database(url)
        with db.engine.begin() as conn:
            for device_id, tags in [("old-1", {"site": "s1"}), ("old-2", {"site": "s2"})]:
                conn.execute(
                    text(
                        "INSERT INTO devices (device_id, generation_id, etag, status, "
                        "status_updated_time, auth_type, iot_edge, connection_state, "
                        "connection_state_updated_time, cloud_to_device_message_count, "
                        "created_at) VALUES (:d, 'g', 'e', 'enabled', :t, 'sas', false, "
                        "'Disconnected', :t, 0, :t)"
                    ),
                    {"d": device_id, "t": "2020-01-01T00:00:00+00:00"},
                )
                conn.execute(
                    text(
                        "INSERT INTO twins (device_id, module_id, version, tags, desired, "
                        "desired_meta, desired_version, reported, reported_meta, "
                        "reported_version, updated_at) VALUES (:d, '', 1, :tags, '{}', '{}', "
                        "1, '{}', '{}', 1, :t)"
                    ),
                    {"d": device_id, "tags": json.dumps(tags), "t": "2020-01-01T00:00:00+00:00"},
                )
        db.dispose()
        site_query = "SELECT deviceId FROM devices WHERE tags.site = 's2'"
        for _ in range(2):  # up, down, up again
            _migrate(url, "head")
            db = Database(url)
            assert Queries(db).all(site_query) == [{"deviceId": "old-2"}]
            with db.engine.connect() as conn:
                if dialect == "sqlite":
                    stored = conn.execute(text("SELECT count(*) FROM twin_tag_values")).scalar()
                    assert stored == 2
                else:
                    index = conn.execute(
                        text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                        {"n": "ix_twins_tags_gin"},
                    ).scalar()
                    assert index is not None and "jsonb_path_ops" in index
            db.dispose()
            _migrate(url, "0006", down=True)

    if dialect == "sqlite":
        check(f"sqlite:///{tmp_path / 'hub.db'}")
    else:
        with temporary_database() as url:
            check(url)
