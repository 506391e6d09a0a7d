"""The IoT Hub query language: parser, evaluator, executor and SQL prefilter.

Pure Python (the SQL part needs only SQLAlchemy core); no database sessions here. The API the hub
calls, and its exact shape::

    parse_query(text: str) -> Query
        ``SELECT [TOP n] * | <path [AS alias]>, ... | COUNT() AS x, AVG/SUM/MIN/MAX(path) AS y
        FROM devices | devices.modules | devices.jobs [WHERE <condition>] [GROUP BY path, ...]``.
        ``query.source``, ``query.select`` (None for ``*``), ``query.where`` (a Condition or
        None), ``query.group_by``, ``query.top``, ``query.is_aggregate``.
    parse_condition(text: str) -> Condition
        A bare condition (WHERE body, deployment targetCondition), same grammar.
    QueryError(ValueError)
        Raised by both parsers; ``str(e)`` is ``line L, column C (offset O): <what was expected>``;
        attributes ``reason``, ``line``, ``column``, ``offset``.
    evaluate(condition: Condition, twin: dict) -> bool | None
        IoT Hub semantics; None means *undefined* (e.g. a missing property, a type mismatch),
        which does not match. Compiled to closures on first use and cached on the Condition.
    matches(condition: Condition | None, twin: dict) -> bool
        ``evaluate(...) is True``; a None condition matches everything.
    execute(query: Query, twins: Iterable[dict]) -> list[dict]
        Filter + projection / COUNT() + GROUP BY + TOP over twins of the query's collection.
    compile_prefilter(condition: Condition, resolver) -> ColumnElement[bool] | None
        A SQL superset filter (never drops a matching twin) to push into the database; run
        ``evaluate`` on the rows it returns. ``resolver(path: list[str]) -> ColumnElement | None``
        maps a twin path to SQL (see ``cloud_hub.query.sql`` for the contract).

Paths are relative to the twin: ``deviceId``, ``moduleId``, ``tags.a.b``,
``properties.desired.$version``, ``configurations.[[my-config]].status``, ``tags.list[0]``;
a leading ``devices.`` / ``devices.modules.`` / ``devices.jobs.`` is stripped. Keys match
case-sensitively.

CLI: ``edgefleet query eval --cases FILE.jsonl`` (this package); the hub's own command that runs a
query against a hub is ``edgefleet query run "SELECT ..."``.
"""

from typing import TYPE_CHECKING

from cloud_hub.query.errors import QueryError
from cloud_hub.query.evaluate import evaluate, matches
from cloud_hub.query.execute import execute
from cloud_hub.query.parser import parse_condition, parse_query
from cloud_hub.query.syntax import UNDEFINED, Condition, Query

if TYPE_CHECKING:
    from cloud_hub.query.sql import compile_exact, compile_prefilter

__all__ = [
    "UNDEFINED",
    "Condition",
    "Query",
    "QueryError",
    "compile_exact",
    "compile_prefilter",
    "evaluate",
    "execute",
    "matches",
    "parse_condition",
    "parse_query",
]


def __getattr__(name: str) -> object:
    # The SQL prefilter imports SQLAlchemy; load it only when asked for.
    if name in ("compile_prefilter", "compile_exact"):
        from cloud_hub.query import sql

        return getattr(sql, name)
    raise AttributeError(name)
