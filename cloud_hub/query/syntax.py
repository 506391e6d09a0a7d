"""Syntax tree of IoT Hub queries and conditions (immutable, hashable dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class _Undefined:
    """The JSON "undefined" value: a missing property or a meaningless result."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "undefined"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Any = _Undefined()


@dataclass(frozen=True)
class Literal:
    value: Any  # str, int, float, bool, None, UNDEFINED, or a tuple of literal values (array)


@dataclass(frozen=True)
class Path:
    """A property path into the document: ``tags.location.region`` -> ('tags', 'location', ...).

    Integer parts index arrays (``tags.list[0]``).
    """

    parts: tuple[str | int, ...]

    def __str__(self) -> str:
        out = ""
        for part in self.parts:
            if isinstance(part, int):
                out += f"[{part}]"
            else:
                out += ("." if out else "") + part
        return out


@dataclass(frozen=True)
class Unary:
    op: str  # "NOT" or "-" or "+"
    operand: Expr


@dataclass(frozen=True)
class Binary:
    op: str  # AND OR = != < <= > >= + - * / %
    left: Expr
    right: Expr


@dataclass(frozen=True)
class In:
    operand: Expr
    values: tuple[Any, ...]
    negated: bool  # NIN / NOT IN


@dataclass(frozen=True)
class Call:
    name: str  # canonical upper-case name
    args: tuple[Expr, ...]


Expr = Literal | Path | Unary | Binary | In | Call


@dataclass(frozen=True)
class Aggregate:
    name: str  # COUNT, AVG, SUM, MIN, MAX
    arg: Path | None


@dataclass(frozen=True)
class SelectItem:
    expr: Path | Aggregate
    alias: str


@dataclass(eq=False)
class Condition:
    """A parsed boolean condition (a WHERE clause or a deployment target condition)."""

    expr: Expr
    text: str = ""
    _compiled: Any = field(default=None, repr=False, compare=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.expr == self.expr

    def __hash__(self) -> int:
        return hash(self.expr)


@dataclass(eq=False)
class Query:
    """A parsed ``SELECT ... FROM ... [WHERE ...] [GROUP BY ...]`` query.

    ``select`` is None for ``SELECT *``. ``source`` is ``devices``, ``devices.modules`` or
    ``devices.jobs``.
    """

    source: str
    select: tuple[SelectItem, ...] | None
    where: Condition | None = None
    group_by: tuple[Path, ...] = ()
    top: int | None = None
    text: str = ""

    @property
    def is_aggregate(self) -> bool:
        return bool(self.group_by) or any(
            isinstance(item.expr, Aggregate) for item in self.select or ()
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Query) and (
            self.source,
            self.select,
            self.where,
            self.group_by,
            self.top,
        ) == (other.source, other.select, other.where, other.group_by, other.top)

    __hash__ = None  # type: ignore[assignment]


def path_roots(expr: Expr) -> set[str] | None:
    """The first names of every property path an expression reads (None: one is not a name)."""
    if isinstance(expr, Path):
        head = expr.parts[0] if expr.parts else None
        return {head} if isinstance(head, str) else None
    children: tuple[Expr, ...]
    if isinstance(expr, Binary):
        children = (expr.left, expr.right)
    elif isinstance(expr, Unary | In):
        children = (expr.operand,)
    elif isinstance(expr, Call):
        children = expr.args
    elif isinstance(expr, Literal):
        return set()
    else:
        return None
    roots: set[str] = set()
    for child in children:
        found = path_roots(child)
        if found is None:
            return None
        roots |= found
    return roots
