"""Evaluation of conditions against twin documents, with IoT Hub's semantics.

Values are JSON values (``dict``, ``list``, ``str``, ``int``/``float``, ``bool``, ``None``) plus
``UNDEFINED`` for a property that does not exist. The rules, as IoT Hub (and the Cosmos DB SQL
dialect it follows) applies them:

* comparisons only compare primitives of the same type (string/string, number/number,
  bool/bool, null/null); anything else, including a missing property, is *undefined*, so
  ``tags.env != 'prod'`` does not match a twin without ``tags.env``;
* AND/OR are three-valued: ``false AND undefined`` is false, ``true OR undefined`` is true,
  otherwise undefined propagates; NOT undefined is undefined;
* a condition matches only when it evaluates to boolean ``true``.

Conditions are compiled once into nested Python closures (cached on the Condition), so matching a
fleet does not walk the syntax tree per twin; ``evaluate_naive`` is the plain tree walk, kept as the
reference and as the benchmark baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from cloud_hub.query import functions
from cloud_hub.query.syntax import (
    UNDEFINED,
    Binary,
    Call,
    Condition,
    Expr,
    In,
    Literal,
    Path,
    Unary,
)

Getter = Callable[[Any], Any]

_KIND: dict[type, str] = {str: "s", int: "n", float: "n", bool: "b", type(None): "z"}


def evaluate(condition: Condition, twin: Mapping[str, Any]) -> bool | None:
    """True/False when the condition evaluates to a boolean, None when it is undefined."""
    fn = condition._compiled
    if fn is None:
        fn = condition._compiled = compile_expr(condition.expr)
    result = fn(twin)
    return result if type(result) is bool else None


def matches(condition: Condition | None, twin: Mapping[str, Any]) -> bool:
    """Whether a twin is selected by a WHERE clause (no clause selects everything)."""
    return condition is None or evaluate(condition, twin) is True


def evaluate_naive(expr: Expr, doc: Any) -> Any:
    """Reference tree-walking evaluator; returns a JSON value or UNDEFINED."""
    if isinstance(expr, Literal):
        return expr.value
    if isinstance(expr, Path):
        return get_path(doc, expr.parts)
    if isinstance(expr, Binary):
        if expr.op == "AND":
            return logical_and(evaluate_naive(expr.left, doc), evaluate_naive(expr.right, doc))
        if expr.op == "OR":
            return logical_or(evaluate_naive(expr.left, doc), evaluate_naive(expr.right, doc))
        return BINARY_OPS[expr.op](evaluate_naive(expr.left, doc), evaluate_naive(expr.right, doc))
    if isinstance(expr, Unary):
        return UNARY_OPS[expr.op](evaluate_naive(expr.operand, doc))
    if isinstance(expr, In):
        return in_list(evaluate_naive(expr.operand, doc), expr.values, expr.negated)
    if isinstance(expr, Call):
        fn = functions.FUNCTIONS[expr.name]
        return fn.impl(*(evaluate_naive(a, doc) for a in expr.args))
    raise TypeError(f"not an expression: {expr!r}")


# -- primitive semantics (shared by both evaluators) ---------------------------------------------


def get_path(doc: Any, parts: tuple[str | int, ...]) -> Any:
    cur = doc
    for part in parts:
        if type(part) is int:
            if type(cur) is not list or not 0 <= part < len(cur):
                return UNDEFINED
            cur = cur[part]
        else:
            if not isinstance(cur, Mapping):
                return UNDEFINED
            cur = cur.get(part, UNDEFINED)
            if cur is UNDEFINED:
                return UNDEFINED
    return cur


def logical_and(a: Any, b: Any) -> Any:
    if a is False or b is False:
        return False
    if a is True and b is True:
        return True
    return UNDEFINED


def logical_or(a: Any, b: Any) -> Any:
    if a is True or b is True:
        return True
    if a is False and b is False:
        return False
    return UNDEFINED


def logical_not(a: Any) -> Any:
    if a is True:
        return False
    if a is False:
        return True
    return UNDEFINED


def _comparable(a: Any, b: Any) -> str | None:
    kind = _KIND.get(type(a))
    if kind is None or kind != _KIND.get(type(b)):
        return None
    return kind


def op_eq(a: Any, b: Any) -> Any:
    return UNDEFINED if _comparable(a, b) is None else a == b


def op_ne(a: Any, b: Any) -> Any:
    return UNDEFINED if _comparable(a, b) is None else a != b


def _ordering(test: Callable[[Any, Any], bool], null_result: bool) -> Callable[[Any, Any], Any]:
    def compare(a: Any, b: Any) -> Any:
        kind = _comparable(a, b)
        if kind is None:
            return UNDEFINED
        if kind == "z":
            return null_result
        return test(a, b)

    return compare


op_lt = _ordering(lambda a, b: a < b, False)
op_le = _ordering(lambda a, b: a <= b, True)
op_gt = _ordering(lambda a, b: a > b, False)
op_ge = _ordering(lambda a, b: a >= b, True)


def _arith(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if not (functions.is_number(a) and functions.is_number(b)):
            return UNDEFINED
        try:
            result = fn(a, b)
        except (ZeroDivisionError, OverflowError, ValueError):
            return UNDEFINED
        if type(result) is float and (math.isnan(result) or math.isinf(result)):
            return UNDEFINED
        return result

    return apply


def _mod(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        r = abs(a) % abs(b)
        return r if a >= 0 else -r
    return math.fmod(a, b)


def _div(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int and b != 0 and a % b == 0:
        return a // b
    return a / b


BINARY_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": op_eq,
    "!=": op_ne,
    "<": op_lt,
    "<=": op_le,
    ">": op_gt,
    ">=": op_ge,
    "+": _arith(lambda a, b: a + b),
    "-": _arith(lambda a, b: a - b),
    "*": _arith(lambda a, b: a * b),
    "/": _arith(_div),
    "%": _arith(_mod),
}


def _neg(a: Any) -> Any:
    return -a if functions.is_number(a) else UNDEFINED


def _pos(a: Any) -> Any:
    return a if functions.is_number(a) else UNDEFINED


UNARY_OPS: dict[str, Callable[[Any], Any]] = {"NOT": logical_not, "-": _neg, "+": _pos}


def in_list(value: Any, values: tuple[Any, ...], negated: bool) -> Any:
    kind = _KIND.get(type(value))
    if kind is None:
        return UNDEFINED
    found = any(_KIND.get(type(v)) == kind and v == value for v in values)
    return found != negated


# -- compiler to closures --------------------------------------------------------------------------


def compile_expr(expr: Expr) -> Getter:
    """Compile an expression into ``fn(doc) -> value`` (same results as evaluate_naive)."""
    if isinstance(expr, Literal):
        value = expr.value
        return lambda doc: value
    if isinstance(expr, Path):
        return _compile_path(expr.parts)
    if isinstance(expr, Binary):
        return _compile_binary(expr)
    if isinstance(expr, Unary):
        operand = compile_expr(expr.operand)
        op = UNARY_OPS[expr.op]
        return lambda doc: op(operand(doc))
    if isinstance(expr, In):
        return _compile_in(expr)
    if isinstance(expr, Call):
        impl = functions.FUNCTIONS[expr.name].impl
        args = [compile_expr(a) for a in expr.args]
        if len(args) == 1:
            (a0,) = args
            return lambda doc: impl(a0(doc))
        if len(args) == 2:
            a0, a1 = args
            return lambda doc: impl(a0(doc), a1(doc))
        return lambda doc: impl(*(a(doc) for a in args))
    raise TypeError(f"not an expression: {expr!r}")


def _compile_path(parts: tuple[str | int, ...]) -> Getter:
    if any(type(p) is int for p in parts):
        return lambda doc: get_path(doc, parts)
    if len(parts) == 1:
        (key,) = parts

        def get1(doc: Any) -> Any:
            try:
                return doc[key]
            except (KeyError, TypeError, IndexError):
                return UNDEFINED

        return get1

    def get(doc: Any) -> Any:
        cur = doc
        try:
            for part in parts:
                cur = cur[part]
        except (KeyError, TypeError, IndexError):
            return UNDEFINED
        return cur

    return get


def _flatten(expr: Expr, op: str, out: list[Expr]) -> list[Expr]:
    if isinstance(expr, Binary) and expr.op == op:
        _flatten(expr.left, op, out)
        _flatten(expr.right, op, out)
    else:
        out.append(expr)
    return out


def _compile_logical(expr: Binary) -> Getter:
    """n-ary AND/OR over the flattened chain; an OR of ``path = constant`` on one path becomes a
    set lookup (deployment targets list device ids that way)."""
    operands = _flatten(expr, expr.op, [])
    if expr.op == "OR":
        lookup = _compile_or_of_equalities(operands)
        if lookup is not None:
            return lookup
    fns = tuple(compile_expr(o) for o in operands)
    if expr.op == "AND":

        def and_(doc: Any) -> Any:
            result: Any = True
            for fn in fns:
                v = fn(doc)
                if v is False:
                    return False
                if v is not True:
                    result = UNDEFINED
            return result

        return and_

    def or_(doc: Any) -> Any:
        result: Any = False
        for fn in fns:
            v = fn(doc)
            if v is True:
                return True
            if v is not False:
                result = UNDEFINED
        return result

    return or_


def _compile_or_of_equalities(operands: list[Expr]) -> Getter | None:
    path: Path | None = None
    values: list[Any] = []
    for o in operands:
        if not (
            isinstance(o, Binary)
            and o.op == "="
            and isinstance(o.left, Path)
            and isinstance(o.right, Literal)
            and _KIND.get(type(o.right.value)) is not None
        ):
            return None
        if path is None:
            path = o.left
        elif o.left != path:
            return None
        values.append(o.right.value)
    if path is None or len(values) < 4:
        return None
    get = _compile_path(path.parts)
    buckets: dict[str, set[Any]] = {}
    for v in values:
        buckets.setdefault(_KIND[type(v)], set()).add(v)
    single_kind = len(buckets) == 1
    kinds = _KIND

    def any_equal(doc: Any) -> Any:
        v = get(doc)
        kind = kinds.get(type(v))
        if kind is None:
            return UNDEFINED
        bucket = buckets.get(kind)
        if bucket is not None and v in bucket:
            return True
        # No match: false when every comparison was a same-type one, else some were undefined.
        return False if single_kind and bucket is not None else UNDEFINED

    return any_equal


def _compile_binary(expr: Binary) -> Getter:
    if expr.op in ("AND", "OR"):
        return _compile_logical(expr)
    left = compile_expr(expr.left)
    if expr.op in ("=", "!=") and isinstance(expr.right, Literal):
        const = expr.right.value
        kind = _KIND.get(type(const))
        if kind is None:  # comparing with undefined/array: never a boolean
            return lambda doc: UNDEFINED
        kinds = _KIND
        if expr.op == "=":

            def eq_const(doc: Any) -> Any:
                v = left(doc)
                if kinds.get(type(v)) != kind:
                    return UNDEFINED
                return v == const

            return eq_const

        def ne_const(doc: Any) -> Any:
            v = left(doc)
            if kinds.get(type(v)) != kind:
                return UNDEFINED
            return v != const

        return ne_const
    right = compile_expr(expr.right)
    op = BINARY_OPS[expr.op]
    return lambda doc: op(left(doc), right(doc))


def _compile_in(expr: In) -> Getter:
    operand = compile_expr(expr.operand)
    negated = expr.negated
    buckets: dict[str, set[Any]] = {}
    for v in expr.values:
        kind = _KIND.get(type(v))
        if kind is not None:
            buckets.setdefault(kind, set()).add(v)
    kinds = _KIND

    def in_(doc: Any) -> Any:
        v = operand(doc)
        kind = kinds.get(type(v))
        if kind is None:
            return UNDEFINED
        bucket = buckets.get(kind)
        return (bucket is not None and v in bucket) != negated

    return in_
