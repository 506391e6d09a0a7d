"""``GROUP BY`` / ``COUNT()`` queries counted by the database, with the evaluator's semantics.

The evaluator groups twins by the JSON *value* of each GROUP BY path (``1`` with ``1.0``, ``true``
apart from ``1``, objects by content, a missing path as its own group without a key field) and
lists the groups in the order their first twin comes in (device id, module id). The database
groups by the JSON *text* of each value instead, which splits no group of the evaluator's (equal
texts are equal values) but may split one group in several (``1`` / ``1.0``, key order); so the
database returns, per distinct text, the count and the position of its first twin, and
``merge_groups`` joins the parts whose values the evaluator groups together and builds the rows
as ``cloud_hub.query.execute`` does.

Counted in SQL: queries whose aggregates are all ``COUNT()``, whose GROUP BY paths have a column
(``locate``) and whose WHERE is absent or exact in SQL (``compile_exact``). Anything else runs
through the evaluator as before.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    String,
    Text,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql import util as sql_util
from sqlalchemy.sql.elements import ColumnElement

from cloud_hub.models import DEVICE_TWIN, DeviceRow, TwinRow
from cloud_hub.query.execute import group_rows, grouped
from cloud_hub.query.sql import plain_json_key
from cloud_hub.query.syntax import UNDEFINED, Aggregate, Query

#: ``locate(path) -> (column, None) | (json column, keys) | None`` (``twin_query.locate_path``)
Locate = Callable[[list[str]], "tuple[Any, list[str] | None] | None"]
# SQLite's `->` operator (JSON text of a value, NULL when missing) arrived in 3.38.
_SQLITE_ARROW = sqlite3.sqlite_version_info >= (3, 38)


@dataclass(frozen=True)
class Extract:
    """How one GROUP BY value is read: a scalar column as is, or JSON text inside a column."""

    column: Any
    keys: tuple[str, ...] | None


def plan_groups(query: Query, locate: Locate, dialect: str) -> list[Extract] | None:
    """The reads of the GROUP BY values when the database can count the query, else None."""
    if not query.is_aggregate or query.select is None:
        return None
    if query.source not in ("devices", "devices.modules") or not _json_text_ok(dialect):
        return None
    for item in query.select:
        if isinstance(item.expr, Aggregate) and item.expr.name != "COUNT":
            return None
    extracts = []
    for path in query.group_by:
        parts = path.parts
        if not parts or any(type(p) is not str or not plain_json_key(p) for p in parts):
            return None
        names = [str(p) for p in parts]
        if names[0] == ("moduleId" if query.source == "devices" else "capabilities"):
            return None  # device twins show no moduleId, module twins no capabilities
        found = locate(names)
        if found is None:
            return None
        column, keys = found
        if keys == []:
            return None  # a whole section: the twin shows {} for an empty or null document
        extracts.append(Extract(column, None if keys is None else tuple(keys)))
    return extracts


def _json_text_ok(dialect: str) -> bool:
    return dialect == "postgresql" or (dialect == "sqlite" and _SQLITE_ARROW)


def json_text(column: Any, keys: Sequence[str], dialect: str) -> ColumnElement[Any]:
    """The JSON text of the value at ``keys`` inside a JSON column; SQL NULL when missing."""
    if dialect == "postgresql":
        value = column
        for key in keys:  # `->` with a text key reads objects only, as the evaluator does
            value = value.op("->", return_type=JSONB)(literal(key, String()))
        return cast(value, Text)
    path = "$" + "".join(f'."{key}"' for key in keys)
    return column.op("->", return_type=Text)(literal(path, String()))


def count_groups(
    conn: Connection,
    query: Query,
    extracts: Sequence[Extract],
    where: ColumnElement[bool] | None,
) -> list[tuple[list[Any], int]]:
    """Per distinct JSON text of the GROUP BY values: (decoded values, count), in the order of
    each part's first twin."""
    dialect = conn.dialect.name
    values = [
        e.column if e.keys is None else json_text(e.column, e.keys, dialect) for e in extracts
    ]
    twins = TwinRow.__table__
    devices = DeviceRow.__table__
    filters: list[Any] = [
        TwinRow.module_id == DEVICE_TWIN
        if query.source == "devices"
        else TwinRow.module_id != DEVICE_TWIN
    ]
    if where is not None:
        filters.append(where)
    tables = set()
    for expr in [*values, *filters]:
        element = expr.__clause_element__() if hasattr(expr, "__clause_element__") else expr
        tables.update(sql_util.find_tables(element, check_columns=True))
    source: Any = twins.join(devices, devices.c.device_id == twins.c.device_id)
    if devices not in tables:
        source = twins
    if query.source == "devices":
        order: Any = TwinRow.device_id
    else:
        order = func.row_number().over(order_by=(TwinRow.device_id, TwinRow.module_id))
    labels = [value.label(f"g{i}") for i, value in enumerate(values)]
    inner = select(*labels, order.label("pos")).select_from(source).where(*filters).subquery()
    keys = [inner.c[f"g{i}"] for i in range(len(values))]
    first = func.min(inner.c.pos)
    stmt = select(*keys, func.count(), first).group_by(*keys).order_by(first)
    parts = []
    for row in conn.execute(stmt):
        decoded = [
            _decode(raw) if e.keys is not None else raw
            for e, raw in zip(extracts, row[: len(extracts)], strict=True)
        ]
        parts.append((decoded, int(row[len(extracts)])))
    return parts


def _decode(text: str | None) -> Any:
    return UNDEFINED if text is None else json.loads(text)


def merge_groups(query: Query, parts: Sequence[tuple[list[Any], int]]) -> list[dict[str, Any]]:
    """The query's rows from the database's parts (``count_groups``), as ``execute`` gives."""
    rows = group_rows(query, grouped(query, parts), lambda _count, counts: sum(counts))
    return rows if query.top is None else rows[: query.top]
