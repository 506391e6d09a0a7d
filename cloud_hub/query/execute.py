"""Running a parsed query over twin documents: filter, group, aggregate, project, TOP."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from cloud_hub.query.evaluate import get_path, matches
from cloud_hub.query.functions import is_number
from cloud_hub.query.syntax import UNDEFINED, Aggregate, Path, Query, SelectItem

T = TypeVar("T")


def execute(query: Query, twins: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Evaluate ``query`` over ``twins`` (already the right collection: device or module twins).

    * ``SELECT *`` returns the matching twins themselves (as dicts, unchanged);
    * a field list returns one object per twin with the aliases as keys; a property that is not
      defined on a twin is left out of that row (IoT Hub omits it, it does not write null);
    * with COUNT()/AVG/SUM/MIN/MAX, and/or GROUP BY, one row per group (first-seen order);
      without GROUP BY, a single row over all matching twins (``COUNT()`` of nothing is 0);
    * ``TOP n`` keeps the first n rows.
    """
    where = query.where
    selected = (t for t in twins if matches(where, t))
    rows: list[dict[str, Any]]
    if query.select is None:
        rows = []
        for twin in selected:
            rows.append(dict(twin))
            if query.top is not None and len(rows) >= query.top:
                break
        return rows
    if query.is_aggregate:
        rows = _aggregate(query, selected)
    else:
        rows = []
        for twin in selected:
            rows.append(_project(query.select, twin))
            if query.top is not None and len(rows) >= query.top:
                break
    return rows if query.top is None else rows[: query.top]


def _project(items: tuple[SelectItem, ...], twin: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for item in items:
        assert isinstance(item.expr, Path)
        value = get_path(twin, item.expr.parts)
        if value is not UNDEFINED:
            row[item.alias] = value
    return row


def group_key(value: Any) -> str:
    # Group by JSON value identity: 1 and 1.0 together, true and 1 apart, objects by content.
    if value is UNDEFINED:
        return "u"
    if type(value) is float and value.is_integer():
        value = int(value)
    try:
        if is_number(value):
            return "n" + repr(value)
        return "j" + json.dumps(value, sort_keys=True)
    except (ValueError, TypeError):  # not JSON-serialisable: group by identity
        return f"x{id(value)}"


def grouped(
    query: Query, entries: Iterable[tuple[list[Any], T]]
) -> list[tuple[list[Any], list[T]]]:
    """``(GROUP BY values, item)`` entries gathered by the values' group keys, in first-seen
    order, with the first entry's values; without GROUP BY there is always the one group."""
    groups: dict[tuple[str, ...], tuple[list[Any], list[T]]] = {}
    for values, item in entries:
        key = tuple(group_key(v) for v in values)
        entry = groups.get(key)
        if entry is None:
            groups[key] = (values, [item])
        else:
            entry[1].append(item)
    if not query.group_by and not groups:
        groups[()] = ([], [])
    return list(groups.values())


def group_rows(
    query: Query,
    groups: Iterable[tuple[list[Any], list[T]]],
    aggregate: Callable[[Aggregate, list[T]], Any],
) -> list[dict[str, Any]]:
    """One row per group: GROUP BY values and ``aggregate(function, members)`` by alias; an
    undefined result leaves its field out."""
    assert query.select is not None
    rows = []
    for values, members in groups:
        row: dict[str, Any] = {}
        for item in query.select:
            if isinstance(item.expr, Aggregate):
                result = aggregate(item.expr, members)
            else:
                result = values[query.group_by.index(item.expr)]
            if result is not UNDEFINED:
                row[item.alias] = result
        rows.append(row)
    return rows


def _aggregate(query: Query, twins: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    entries = (([get_path(t, p.parts) for p in query.group_by], t) for t in twins)
    return group_rows(query, grouped(query, entries), _apply_aggregate)


def _apply_aggregate(agg: Aggregate, members: list[Mapping[str, Any]]) -> Any:
    if agg.name == "COUNT":
        return len(members)
    assert agg.arg is not None
    values = [get_path(t, agg.arg.parts) for t in members]
    numbers = [v for v in values if is_number(v)]
    if agg.name == "SUM":
        return sum(numbers)
    if agg.name == "AVG":
        try:
            return sum(numbers) / len(numbers) if numbers else UNDEFINED
        except OverflowError:
            return UNDEFINED
    # MIN / MAX: over numbers when there are any, otherwise over strings.
    pool: list[Any] = numbers or [v for v in values if type(v) is str]
    if not pool:
        return UNDEFINED
    return min(pool) if agg.name == "MIN" else max(pool)
