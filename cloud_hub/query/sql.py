"""SQL prefilter: push the safe part of a condition into the database as a superset filter.

``compile_prefilter(condition, resolver)`` returns a SQLAlchemy boolean expression that is true
for *every* twin the condition matches (and possibly for some it does not), or ``None`` when
nothing can be pushed down. The caller selects rows with it and then runs ``evaluate`` on each row
for the exact answer. What is pushed: comparisons of a path with a string/number/bool/null
constant, ``path = path``, ``IN [...]``, ``STARTS_WITH``/``ENDS_WITH``/``CONTAINS`` with a
constant (``LIKE`` with escaping), AND (either side that compiles), OR (when both sides compile).
NOT, NIN, arithmetic and the other functions are not pushed (their subtree is ``None``).

``compile_exact(condition, resolver)`` returns the same filter only where it selects *exactly*
the twins the condition matches (so a count needs no evaluation): AND/OR of ``path = 'string'``,
``path IN ['string', ...]`` and ``boolean column = true|false``. Nothing else is exact on both
databases: SQLite's ``json_extract`` gives 1 for ``true`` (so ``= 1`` would also select it) and
an object's JSON text (so a string constant starting with ``{`` or ``[`` could equal it),
PostgreSQL's ``#>`` reads a digit key as an array index, and ``!=`` is true in SQL between values
of different types where the query language says undefined. The resolver must then map only paths
whose value *is* the column's for every twin of the collection.

The resolver contract: ``resolver(path: list[str]) -> ColumnElement | None`` gets the twin path
(``["tags", "location", "region"]``) and returns either

* an expression of SQLAlchemy type ``JSON`` holding the JSON value at that path, SQL NULL when the
  path is missing -- e.g. ``TwinRow.tags[("location", "region")]`` (see ``json_path``); on
  PostgreSQL the column must be ``JSONB``; or
* a plain column of type String/Integer/Float/Numeric/Boolean whose value *is* the twin's value
  at that path (e.g. ``TwinRow.device_id`` for ``["deviceId"]``); or
* ``None`` when the path has no SQL mapping.

The expressions render per dialect: SQLite compares ``json_extract(<json>, '$')`` (native SQL
values), PostgreSQL compares ``jsonb`` values with ``jsonb`` constants (numbers numerically) and
strings with ``COLLATE "C"`` so the order is the code-point order the evaluator uses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Boolean, Float, Integer, Numeric, String, and_, false, literal, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from cloud_hub.query.syntax import Binary, Call, Condition, Expr, In, Literal, Path

Resolver = Callable[[list[str]], "ColumnElement[Any] | None"]
#: ``lookup(path, value)``: an extra filter, true for every twin whose value at ``path`` equals
#: the primitive ``value`` (an index the database can use), or None; ANDed with ``path = value``.
Lookup = Callable[[list[str], Any], "ColumnElement[bool] | None"]

_FLIP = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_SQL_OP = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_LIKE_FUNCS = {"STARTS_WITH": "{}%", "ENDS_WITH": "%{}", "CONTAINS": "%{}%"}
_SAFE_INT = 2**53


def compile_prefilter(
    condition: Condition, resolver: Resolver, lookup: Lookup | None = None
) -> ColumnElement[bool] | None:
    """A superset SQL filter for ``condition`` (see the module docstring), or None.

    With ``lookup``, each pushed ``path = constant`` (and each ``IN`` element) also gets the
    lookup's filter ANDed in, so the database can find the rows through an index.
    """
    return _Compiler(resolver, lookup).compile(condition.expr)


def compile_exact(
    condition: Condition, resolver: Resolver, lookup: Lookup | None = None
) -> ColumnElement[bool] | None:
    """A SQL filter for exactly the twins ``condition`` matches, or None (see the docstring)."""
    if not _exact(condition.expr, resolver):
        return None
    return compile_prefilter(condition, resolver, lookup)


def _exact(expr: Expr, resolver: Resolver) -> bool:
    if isinstance(expr, Binary) and expr.op in ("AND", "OR"):
        return _exact(expr.left, resolver) and _exact(expr.right, resolver)
    if isinstance(expr, Binary) and expr.op == "=":
        left, right = expr.left, expr.right
        if isinstance(left, Literal):
            left, right = right, left
        return (
            isinstance(left, Path)
            and isinstance(right, Literal)
            and _exact_leaf(left, right.value, resolver)
        )
    if isinstance(expr, In) and not expr.negated and isinstance(expr.operand, Path):
        operand = expr.operand
        return bool(expr.values) and all(_exact_leaf(operand, v, resolver) for v in expr.values)
    return False


def _exact_leaf(path: Path, value: Any, resolver: Resolver) -> bool:
    """Whether ``path = value`` selects in SQL exactly what the query language selects."""
    parts = path.parts
    if any(type(p) is not str or p.lstrip("-").isdigit() for p in parts):
        return False
    column = resolver([str(p) for p in parts])
    if column is None:
        return False
    if type(value) is str:
        if _is_json(column):
            return not value.startswith(("{", "["))
        return isinstance(column.type, String)
    return type(value) is bool and isinstance(column.type, Boolean)


def json_path(column: Any, parts: Sequence[str]) -> ColumnElement[Any] | None:
    """``column[parts]`` for a JSON/JSONB column, or the column itself for an empty path.

    Returns None for keys SQLite cannot look up: a key JSON escapes (``"``, ``\\``, control and
    non-ASCII characters) is matched against its escaped text in the stored document.
    """
    if not all(plain_json_key(p) for p in parts):
        return None
    if not parts:
        return column
    return column[tuple(parts)]


def plain_json_key(key: str) -> bool:
    """Whether ``key`` is stored as itself in JSON text (json.dumps escapes nothing in it)."""
    return json.dumps(key) == f'"{key}"'


class _Compiler:
    def __init__(self, resolver: Resolver, lookup: Lookup | None = None) -> None:
        self.resolver = resolver
        self.lookup = lookup

    def compile(self, expr: Expr) -> ColumnElement[bool] | None:
        if isinstance(expr, Binary):
            if expr.op == "AND":
                left, right = self.compile(expr.left), self.compile(expr.right)
                if left is not None and right is not None:
                    return and_(left, right)
                return left if left is not None else right
            if expr.op == "OR":
                left = self.compile(expr.left)
                if left is None:
                    return None
                right = self.compile(expr.right)
                return None if right is None else or_(left, right)
            if expr.op in _FLIP:
                return self.comparison(expr)
            return None
        if isinstance(expr, In):
            return self.in_list(expr)
        if isinstance(expr, Call) and expr.name in _LIKE_FUNCS:
            return self.like(expr)
        if isinstance(expr, Literal):
            # A constant condition: `true` filters nothing; anything else is never true.
            return None if expr.value is True else false()
        return None

    def resolve(self, path: Path) -> ColumnElement[Any] | None:
        if any(type(p) is not str for p in path.parts):
            return None
        return self.resolver([str(p) for p in path.parts])

    def comparison(self, expr: Binary) -> ColumnElement[bool] | None:
        left, right, op = expr.left, expr.right, expr.op
        if isinstance(left, Literal) and isinstance(right, Path):
            left, right, op = right, left, _FLIP[op]
        if isinstance(left, Path) and isinstance(right, Literal):
            column = self.resolve(left)
            if column is None:
                return None
            return self.indexed(left, right.value, _compare(column, op, right.value), op)
        if isinstance(left, Path) and isinstance(right, Path) and op == "=":
            a, b = self.resolve(left), self.resolve(right)
            if a is None or b is None or not (_is_json(a) and _is_json(b)):
                return None
            return _JsonOp(a, "=", b)
        return None

    def in_list(self, expr: In) -> ColumnElement[bool] | None:
        if expr.negated or not isinstance(expr.operand, Path):
            return None
        column = self.resolve(expr.operand)
        if column is None:
            return None
        terms = []
        for value in expr.values:
            if not _is_primitive(value):
                continue  # an array/undefined element never equals anything
            term = self.indexed(expr.operand, value, _compare(column, "=", value), "=")
            if term is None:
                return None
            terms.append(term)
        return or_(*terms) if terms else false()

    def indexed(
        self, path: Path, value: Any, term: ColumnElement[bool] | None, op: str
    ) -> ColumnElement[bool] | None:
        """``term`` (the comparison of ``path`` with ``value``) with the lookup ANDed in."""
        if term is None or self.lookup is None or op != "=" or not _is_primitive(value):
            return term
        extra = self.lookup([str(p) for p in path.parts], value)
        return term if extra is None else and_(extra, term)

    def like(self, expr: Call) -> ColumnElement[bool] | None:
        subject, fragment = expr.args
        if not (isinstance(subject, Path) and isinstance(fragment, Literal)):
            return None
        if type(fragment.value) is not str:
            return false()  # string functions with a non-string argument are never true
        column = self.resolve(subject)
        if column is None:
            return None
        escaped = fragment.value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = _LIKE_FUNCS[expr.name].format(escaped)
        if _is_json(column):
            return _JsonOp(column, "LIKE", literal(pattern, String()))
        if isinstance(column.type, String):
            return column.like(pattern, escape="\\")
        return None


def _is_primitive(value: Any) -> bool:
    return value is None or type(value) in (str, bool, int, float)


def _is_json(column: ColumnElement[Any]) -> bool:
    return isinstance(column.type, sqltypes.JSON)


def _number_ok(value: Any) -> bool:
    # Below 2**53 a constant is exact as a double, so a database that compares through doubles
    # still orders it correctly against any integer.
    if type(value) is int:
        return -_SAFE_INT < value < _SAFE_INT
    return type(value) is float and math.isfinite(value) and abs(value) < _SAFE_INT


def _compare(column: ColumnElement[Any], op: str, value: Any) -> ColumnElement[bool] | None:
    if value is None:
        # Only null equals null; `< null`, `> null`, `!= null` are never true.
        if op in ("=", "<=", ">="):
            return _JsonOp(column, "IS NULL", None) if _is_json(column) else column.is_(None)
        return false()
    if type(value) not in (str, bool, int, float):
        return false()  # undefined / an array constant never compares true
    if type(value) in (int, float) and not _number_ok(value):
        return None
    if _is_json(column):
        return _JsonOp(column, op, _JsonConst(value))
    ctype = column.type
    if type(value) is str and isinstance(ctype, String):
        target = _CollateC(column) if op not in ("=", "!=") else column
        return _plain(target, op, literal(value, String()))
    if type(value) is bool and isinstance(ctype, Boolean):
        return _plain(column, op, literal(value, Boolean()))
    if type(value) in (int, float) and isinstance(ctype, Integer | Float | Numeric):
        return _plain(column, op, literal(value))
    return None


def _plain(column: ColumnElement[Any], op: str, value: ColumnElement[Any]) -> ColumnElement[bool]:
    ops: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return ops[op](column, value)


# -- dialect-specific constructs -----------------------------------------------------------------


class _JsonConst(ColumnElement[Any]):
    """A JSON constant: a native bind on SQLite, ``CAST(:json AS JSONB)`` on PostgreSQL.

    Both binds are made here, so a statement compiled once serves other constants of the same
    shape (SQLAlchemy's statement cache: the binds' types are part of the key, their values
    are not). ``true`` and ``1`` share a key and render the same SQL, with their own values.
    """

    inherit_cache = True
    _traverse_internals = [
        ("native", InternalTraversal.dp_clauseelement),
        ("text", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, value: Any) -> None:
        self.value = value
        # SQLite's json_extract gives 1/0 for true/false
        self.native = literal(int(value) if type(value) is bool else value)
        self.text = literal(json.dumps(value), String())
        self.type = sqltypes.NullType()


@compiles(_JsonConst)
def _json_const_default(element: _JsonConst, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.native, **kw)


@compiles(_JsonConst, "postgresql")
def _json_const_pg(element: _JsonConst, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.text, **kw)} AS JSONB)"


class _JsonOp(ColumnElement[bool]):
    """``<json value at path> <op> <operand>`` rendered per dialect.

    op is one of = != < <= > >= (operand: _JsonConst or another JSON path), LIKE (operand: a
    string bind) or IS NULL (no operand).
    """

    inherit_cache = True
    type = Boolean()
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("sql_operator", InternalTraversal.dp_string),
        ("operand", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], op: str, operand: Any) -> None:
        self.column = column
        self.sql_operator = op
        self.operand = operand


@compiles(_JsonOp)
def _json_op_default(element: _JsonOp, compiler: SQLCompiler, **kw: Any) -> str:
    native = f"json_extract({compiler.process(element.column, **kw)}, '$')"
    if element.sql_operator == "IS NULL":
        return f"({native} IS NULL)"
    if element.sql_operator == "LIKE":
        return f"({native} LIKE {compiler.process(element.operand, **kw)} ESCAPE '\\')"
    operand = element.operand
    if isinstance(operand, _JsonConst):
        return f"({native} {_SQL_OP[element.sql_operator]} {compiler.process(operand, **kw)})"
    # path = path: JSON null equals null, which json_extract turns into SQL NULL; `IS` keeps it.
    return f"({native} IS json_extract({compiler.process(operand, **kw)}, '$'))"


@compiles(_JsonOp, "postgresql")
def _json_op_pg(element: _JsonOp, compiler: SQLCompiler, **kw: Any) -> str:
    value = f"({compiler.process(element.column, **kw)})"
    if element.sql_operator == "IS NULL":
        return f"({value} = 'null'::jsonb)"
    if element.sql_operator == "LIKE":
        pattern = compiler.process(element.operand, **kw)
        return f"(({value} #>> '{{}}') LIKE {pattern} ESCAPE '\\')"
    operand = element.operand
    if (
        isinstance(operand, _JsonConst)
        and type(operand.value) is str
        and element.sql_operator not in ("=", "!=")
    ):
        # jsonb orders strings by the database collation; compare the text in code-point order.
        bind = compiler.process(operand.native, **kw)
        return f"(({value} #>> '{{}}') COLLATE \"C\" {_SQL_OP[element.sql_operator]} {bind})"
    return f"({value} {_SQL_OP[element.sql_operator]} ({compiler.process(operand, **kw)}))"


class _CollateC(ColumnElement[Any]):
    """A string column compared in code-point order (``COLLATE "C"`` on PostgreSQL)."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


@compiles(_CollateC)
def _collate_default(element: _CollateC, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)  # SQLite's BINARY collation is code-point order


@compiles(_CollateC, "postgresql")
def _collate_pg(element: _CollateC, compiler: SQLCompiler, **kw: Any) -> str:
    return f'({compiler.process(element.column, **kw)}) COLLATE "C"'
