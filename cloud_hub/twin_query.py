"""Running IoT Hub queries over the stored twins: SQL prefilter, exact evaluation, paging.

The query package (``cloud_hub.query``) parses and evaluates; this module maps twin paths to SQL
(``resolve_path``), streams candidate rows in key order and pages the results with an opaque
continuation token (``x-ms-continuation``).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, true
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from cloud_hub.db import Database
from cloud_hub.errors import InvalidInput
from cloud_hub.models import DEVICE_TWIN, DeviceRow, TwinRow
from cloud_hub.tag_index import count_up_to, tag_lookup
from cloud_hub.twin_groups import count_groups, merge_groups, plan_groups
from cloud_hub.twins import twin_from_row, twin_select

MAX_PAGE_SIZE = 10_000
# A tag lookup that finds this many twins or more is not used: the scan in key order is better.
SELECTIVE_TWINS = 1_000
_BATCH = 500


@dataclass
class QueryPage:
    items: list[Any]
    continuation: str | None
    item_type: str  # "Twin" for SELECT *, "Raw" otherwise


class QueryFailed(InvalidInput):
    """A query that does not parse; ``position`` fields locate the error."""

    code = "BadQuery"


def locate_path(path: list[str]) -> tuple[Any, list[str] | None] | None:
    """Where a twin path is stored: ``(column, None)`` for a scalar column holding exactly that
    value, ``(json column, keys inside it)`` for a value inside tags / desired / reported /
    configurations, or None when it has no SQL form.

    Scalar columns: deviceId, moduleId, versions, capabilities.iotEdge, status, statusReason.
    """
    if not path:
        return None
    head, rest = path[0], path[1:]
    if not rest:
        scalar: dict[str, Any] = {
            "deviceId": TwinRow.device_id,
            "moduleId": TwinRow.module_id,
            "version": TwinRow.version,
            "$version": TwinRow.version,
            "status": DeviceRow.status,
            "statusReason": DeviceRow.status_reason,
        }
        column = scalar.get(head)
        return None if column is None else (column, None)
    if head == "capabilities" and rest == ["iotEdge"]:
        return DeviceRow.iot_edge, None
    if head == "tags":
        return TwinRow.tags, rest
    if head == "configurations":
        return TwinRow.configurations, rest
    if head == "properties" and rest[0] in ("desired", "reported"):
        section, inner = rest[0], rest[1:]
        if inner == ["$version"]:
            version = TwinRow.desired_version if section == "desired" else TwinRow.reported_version
            return version, None
        if not inner or any(p.startswith("$") for p in inner):
            return None
        return (TwinRow.desired if section == "desired" else TwinRow.reported), inner
    return None


def resolve_path(path: list[str]) -> Any:
    """Map a twin path to SQL for ``compile_prefilter``; None when it has no SQL form.

    Scalar columns come back as themselves (``locate_path``); a path inside tags / desired /
    reported / configurations comes back as the JSON value at that path (``json_path``:
    ``json_extract`` on SQLite, ``#>`` on PostgreSQL's JSONB).
    """
    from cloud_hub.query.sql import json_path

    found = locate_path(path)
    if found is None:
        return None
    column, keys = found
    return column if keys is None else json_path(column, keys)


def path_lookup(db: Database) -> Callable[[list[str], Any], Any]:
    """The index lookup for ``path = value`` (``compile_prefilter``'s ``lookup``): tags only,
    and only where the index finds fewer than ``SELECTIVE_TWINS`` twins (``count_up_to``)."""

    def lookup(path: list[str], value: Any) -> Any:
        if len(path) < 2 or path[0] != "tags":
            return None
        probe = count_up_to(path[1:], value, db.dialect, SELECTIVE_TWINS)
        if probe is None:
            return None
        with db.read_conn() as conn:
            if conn.execute(probe).scalar_one() >= SELECTIVE_TWINS:
                return None
        return tag_lookup(path[1:], value, db.dialect)

    return lookup


def _exact_resolver(source: str) -> Any:
    """``resolve_path`` less the paths a collection's twins do not show as their column: device
    twins have no ``moduleId``, module twins no ``capabilities``."""

    def resolve(path: list[str]) -> Any:
        if path[:1] == ["moduleId"] and source == "devices":
            return None
        if path[:1] == ["capabilities"] and source != "devices":
            return None
        return resolve_path(path)

    return resolve


def _encode(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode()


def _decode(token: str | None, fingerprint: str) -> dict[str, Any]:
    if not token:
        return {}
    try:
        state = json.loads(base64.urlsafe_b64decode(token.encode()))
    except ValueError:
        raise InvalidInput("invalid continuation token", path="x-ms-continuation") from None
    if not isinstance(state, dict) or state.get("q") != fingerprint:
        raise InvalidInput(
            "continuation token does not belong to this query", path="x-ms-continuation"
        )
    return state


class Queries:
    def __init__(self, db: Database) -> None:
        self.db = db

    def parse(self, text: str) -> Any:
        from cloud_hub.query import QueryError, parse_query

        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("query must be a non-empty string", path="query")
        try:
            return parse_query(text)
        except QueryError as exc:
            raise QueryFailed(f"query: {exc}", path="query") from None

    def run(self, text: str, page_size: int = 100, continuation: str | None = None) -> QueryPage:
        """One page of a query's results and the token of the next page (None at the end)."""
        from cloud_hub.query import execute, matches

        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidInput(
                f"x-ms-max-item-count must be between 1 and {MAX_PAGE_SIZE}",
                path="x-ms-max-item-count",
            )
        query = self.parse(text)
        fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
        state = _decode(continuation, fingerprint)
        item_type = "Twin" if query.select is None else "Raw"
        if query.source == "devices.jobs":
            return QueryPage([], None, "Raw")

        if query.is_aggregate:
            rows = self._counted_in_sql(query)
            if rows is None:
                rows = execute(query, self._twins(query, None))
            offset = int(state.get("o", 0))
            page = rows[offset : offset + page_size]
            more = offset + page_size < len(rows)
            token = _encode({"q": fingerprint, "o": offset + page_size}) if more else None
            return QueryPage(page, token, item_type)

        emitted = int(state.get("n", 0))
        limit = page_size
        if query.top is not None:
            limit = min(limit, query.top - emitted)
        after = state.get("k")
        single = dataclasses.replace(query, top=None)
        items: list[Any] = []
        last_key: list[str] | None = None
        if limit > 0:
            for key, twin in self._keyed_twins(query, after, limit + 1):
                last_key = key
                doc = _queryable(twin)
                if not matches(query.where, doc):
                    continue
                items.extend(execute(single, [doc]) if query.select is not None else [twin])
                if len(items) >= limit:
                    break
        emitted += len(items)
        done = len(items) < limit or (query.top is not None and emitted >= query.top)
        token = None
        if not done and last_key is not None:
            token = _encode({"q": fingerprint, "k": last_key, "n": emitted})
        return QueryPage(items, token, item_type)

    def all(self, text: str, page_size: int = MAX_PAGE_SIZE) -> list[Any]:
        """Every result of a query, page after page."""
        items: list[Any] = []
        token: str | None = None
        while True:
            page = self.run(text, page_size, token)
            items += page.items
            token = page.continuation
            if token is None:
                return items

    def count(self, text: str) -> int:
        """How many results ``all(text)`` has; counted in SQL where the condition is exact there
        (no twin document is built)."""
        query = self.parse(text)
        where = self._exact(query)
        if where is None:
            return len(self.all(text))
        stmt = select(func.count()).select_from(self._source_select(query).where(where).subquery())
        with self.db.read_conn() as conn:
            total = int(conn.execute(stmt).scalar_one())
        return total if query.top is None else min(total, query.top)

    def device_ids(self, text: str) -> set[str]:
        """The device ids of the twins a query's WHERE selects (``SELECT deviceId`` queries);
        read in SQL where the condition is exact there."""
        query = self.parse(text)
        where = self._exact(query)
        if where is None or query.top is not None:
            return {item["deviceId"] for item in self.all(text) if "deviceId" in item}
        stmt = self._source_select(query).where(where).with_only_columns(TwinRow.device_id)
        with self.db.read_conn() as conn:
            return set(conn.execute(stmt).scalars())

    def _counted_in_sql(self, query: Any) -> list[dict[str, Any]] | None:
        """An aggregate query's rows counted by the database (``cloud_hub.twin_groups``), or
        None when the evaluator must run it."""
        extracts = plan_groups(query, locate_path, self.db.dialect)
        if extracts is None:
            return None
        where = self._exact_where(query) if query.where is not None else None
        if query.where is not None and where is None:
            return None
        try:
            with self.db.read_conn() as conn:
                parts = count_groups(conn, query, extracts, where)
        except DBAPIError:  # e.g. a document SQLite's JSON functions cannot parse
            return None
        return merge_groups(query, parts)

    def _exact(self, query: Any) -> ColumnElement[bool] | None:
        """A filter selecting exactly the query's matches, for a plain (not aggregate) query."""
        if query.is_aggregate:
            return None
        return self._exact_where(query)

    def _exact_where(self, query: Any) -> ColumnElement[bool] | None:
        """A filter selecting exactly the twins the query's WHERE matches, or None."""
        if query.source not in ("devices", "devices.modules"):
            return None
        if query.where is None:
            return true()
        from cloud_hub.query.sql import compile_exact

        try:
            return compile_exact(query.where, _exact_resolver(query.source), path_lookup(self.db))
        except Exception:  # an optimisation too: the evaluator answers instead
            return None

    def _source_select(self, query: Any) -> Any:
        base = twin_select()
        if query.source == "devices.modules":
            return base.where(TwinRow.module_id != DEVICE_TWIN)
        return base.where(TwinRow.module_id == DEVICE_TWIN)

    def _prefilter(self, query: Any) -> ColumnElement[bool] | None:
        if query.where is None:
            return None
        from cloud_hub.query.sql import compile_prefilter

        try:
            result: ColumnElement[bool] | None = compile_prefilter(
                query.where, resolve_path, path_lookup(self.db)
            )
        except Exception:  # a prefilter is an optimisation; never fail the query for it
            return None
        return result

    def _keyed_twins(
        self, query: Any, after: list[str] | None, first_batch: int = _BATCH
    ) -> Iterator[tuple[list[str], dict[str, Any]]]:
        """Candidate twins in key order, read in batches: the first of ``first_batch`` rows
        (a page needs no more when the filter is exact), the next ones growing to ``_BATCH``."""
        batch_size = max(1, min(first_batch, _BATCH))
        base = self._source_select(query)
        prefilter = self._prefilter(query)
        if prefilter is not None:
            base = base.where(prefilter)
        base = base.order_by(TwinRow.device_id, TwinRow.module_id)
        cursor = after
        while True:
            stmt = base
            if cursor is not None:
                dev, mod = cursor
                stmt = stmt.where(
                    or_(
                        TwinRow.device_id > dev,
                        and_(TwinRow.device_id == dev, TwinRow.module_id > mod),
                    )
                )
            with self.db.read_conn() as conn:
                batch = conn.execute(stmt.limit(batch_size)).all()
            docs = []
            for row in batch:
                twin = twin_from_row(row)
                docs.append(([twin["deviceId"], twin.get("moduleId", DEVICE_TWIN)], twin))
            yield from docs
            if len(batch) < batch_size:
                return
            cursor = docs[-1][0]
            batch_size = min(batch_size * 4, _BATCH)

    def _twins(self, query: Any, after: list[str] | None) -> Iterator[dict[str, Any]]:
        for _key, twin in self._keyed_twins(query, after):
            yield _queryable(twin)


def _queryable(twin: dict[str, Any]) -> dict[str, Any]:
    """The document conditions see: the twin plus ``$version`` (the twin version) at the top."""
    return {**twin, "$version": twin["version"]}


__all__ = ["Queries", "QueryFailed", "QueryPage", "resolve_path"]
