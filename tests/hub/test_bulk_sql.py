"""Many-row writes (``cloud_hub.bulk_sql``) store what one-row writes store, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, insert, select

from cloud_hub.bulk_sql import encode_json, insert_rows, update_rows
from cloud_hub.hub import Hub
from cloud_hub.models import DeviceRow, TwinRow

TWINS: Table = TwinRow.__table__  # type: ignore[assignment]
# a fixed instant with microseconds, derived from the epoch (stored and read back, never compared
# with the clock)
WHEN = datetime.fromtimestamp(0, UTC) + timedelta(days=11356, seconds=14706, microseconds=789000)
DOCS: list[Any] = [
    {"a": {"b": [1, 2.5, None, True]}, "é": '"quoted" \\ back\'slash'},
    None,  # JSON null, as the JSON column type stores None
    {},
]


def _twins(hub: Hub) -> dict[str, dict[str, Any]]:
    columns: list[Any] = [TwinRow.device_id, TwinRow.tags, TwinRow.desired, TwinRow.version]
    columns += [TwinRow.configurations, TwinRow.updated_at]
    with hub.db.read_conn() as conn:
        rows = conn.execute(select(*columns).where(TwinRow.module_id == "m")).all()
    return {row.device_id: row._asdict() for row in rows}


def test_bulk_rows_read_back_as_written_one_by_one(hub: Hub) -> None:
    ids = ["d0", "d1", "d2"]
    with hub.db.write_conn() as conn:
        conn.execute(
            insert(DeviceRow),
            [
                {"device_id": d, "generation_id": "1", "etag": "e", "created_at": WHEN}
                | {"connection_state_updated_time": WHEN, "status_updated_time": WHEN}
                for d in ids
            ],
        )
        rows = [
            {"device_id": d, "module_id": "m", "version": 1, "updated_at": WHEN}
            | {"desired_version": 1, "reported_version": 1, "configurations": doc}
            for d, doc in zip(ids, DOCS, strict=True)
        ]
        insert_rows(conn, TWINS, rows, {"tags": "'{}'", "desired": "'{}'"})
    inserted = _twins(hub)
    assert [inserted[d]["configurations"] for d in ids] == DOCS
    assert {d: (t["tags"], t["desired"]) for d, t in inserted.items()} == dict.fromkeys(
        ids, ({}, {})
    )
    assert inserted["d0"]["updated_at"].replace(tzinfo=UTC) == WHEN

    later = WHEN + timedelta(days=331)
    with hub.db.write_conn() as conn:
        changes = [
            {"device_id": d, "module_id": "m", "desired": encode_json(doc), "version": i + 5}
            | {"updated_at": later, "configurations": encode_json(doc)}
            for i, (d, doc) in enumerate(zip(ids, reversed(DOCS), strict=True))
        ]
        update_rows(conn, TWINS, ("device_id", "module_id"), changes, ("desired", "configurations"))
    updated = _twins(hub)
    assert [updated[d]["desired"] for d in ids] == list(reversed(DOCS))
    assert [updated[d]["configurations"] for d in ids] == list(reversed(DOCS))
    assert [updated[d]["version"] for d in ids] == [5, 6, 7]
    assert updated["d2"]["updated_at"].replace(tzinfo=UTC) == later

    shared = encode_json(DOCS[0])  # one text for every row, as a deployment's document is
    with hub.db.write_conn() as conn:
        changes = [
            {"device_id": d, "module_id": "m", "desired": shared, "configurations": encode_json(c)}
            for d, c in zip(ids, [None, DOCS[0], {"x": 2}], strict=True)
        ]
        update_rows(conn, TWINS, ("device_id", "module_id"), changes, ("desired", "configurations"))
    again = _twins(hub)
    assert [again[d]["desired"] for d in ids] == [DOCS[0]] * 3
    assert [again[d]["configurations"] for d in ids] == [None, DOCS[0], {"x": 2}]
    assert [again[d]["version"] for d in ids] == [5, 6, 7]
