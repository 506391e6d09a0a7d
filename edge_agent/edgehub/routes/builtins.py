"""Built-in functions of the condition language: overloads, static result types, runtime."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.edgehub.routes import values as v
from edge_agent.edgehub.routes.message import RouteMessage

Fn = Callable[[RouteMessage], Any]


@dataclass(frozen=True)
class Executor:
    kind: str  # "args" (exact arity), "varargs" (the last type repeats), "any" (any types)
    types: tuple[str, ...]
    qv: bool  # arguments may be query values, and are passed to ``impl`` as QV
    result: str
    impl: Callable[..., Any] | None = None  # for qv executors: impl(*qvs) -> value
    build: Callable[[Sequence[str], Sequence[Fn]], Fn] | None = None  # for typed executors

    def matches(self, given: Sequence[str]) -> bool:
        if self.kind == "any":
            return len(given) == len(self.types)
        if self.kind == "varargs":
            n = len(self.types) - 1
            if len(given) < n:
                return False
            fixed = all(
                g == t or (self.qv and g == v.QV_T)
                for g, t in zip(given[:n], self.types, strict=False)
            )
            last = self.types[n]
            return fixed and all(g == last or (self.qv and g == v.QV_T) for g in given[n:])
        if len(given) != len(self.types):
            return False
        return all(_match(t, g, self.qv) for t, g in zip(self.types, given, strict=True))

    def compile(self, given: Sequence[str], fns: Sequence[Fn]) -> Fn:
        if self.build is not None:
            return self.build(given, fns)
        impl = self.impl
        assert impl is not None
        convs = [_as_qv(t, f) for t, f in zip(given, fns, strict=True)]
        if len(convs) == 1:
            (c0,) = convs
            return lambda m: impl(c0(m))
        if len(convs) == 2:
            c0, c1 = convs
            return lambda m: impl(c0(m), c1(m))
        return lambda m: impl(*[c(m) for c in convs])


def _match(expected: str, given: str, qv: bool) -> bool:
    if expected == given:
        return True
    if not qv:
        return False
    return (given == v.QV_T and expected in v.QV_SUPPORTED) or (
        expected == v.QV_T and given in v.QV_SUPPORTED
    )


def _as_qv(t: str, f: Fn) -> Fn:
    if t == v.QV_T:
        return f
    return lambda m: v.to_qv(t, f(m))


def _const(value: Any) -> Callable[[Sequence[str], Sequence[Fn]], Fn]:
    return lambda _types, _fns: lambda _m: value


def _math(fn: Callable[[float], float]) -> list[Executor]:
    def impl(q: v.QV) -> float:
        if q.kind != v.K_DOUBLE or q.value != q.value:
            return v.NAN
        return fn(q.value)

    return [Executor("args", (v.NUM,), True, v.NUM, impl)]


def _str_of(q: v.QV) -> str | None:
    """The string of a string query value; None when not a defined, non-null string."""
    if q.kind != v.K_STRING or q.value is None:
        return None
    return q.value


def _as_number(q: v.QV) -> float:
    if q.kind == v.K_STRING:
        return v.NAN if q.value is None else v.parse_number(q.value)
    if q.kind == v.K_DOUBLE:
        return q.value
    return v.NAN


def _is_bool(q: v.QV) -> int:
    if q.kind == v.K_NONE:
        return v.UNKNOWN
    return v.TRUE if q.kind == v.K_BOOL else v.FALSE


def _is_number(q: v.QV) -> int:
    return v.TRUE if q.kind == v.K_DOUBLE and math.isfinite(q.value) else v.FALSE


def _is_string(q: v.QV) -> int:
    return v.TRUE if q.kind == v.K_STRING and q.value is not None else v.FALSE


def _is_null_qv(q: v.QV) -> int:
    if q.kind == v.K_NONE:
        return v.UNKNOWN
    return v.TRUE if q.kind == v.K_NULL else v.FALSE


def _concat(*qs: v.QV) -> Any:
    if all(q.kind == v.K_STRING for q in qs):
        return "".join(q.value or "" for q in qs)
    return v.UNDEF


def _length(q: v.QV) -> float:
    s = _str_of(q)
    return v.NAN if s is None else float(v.utf16_len(s))


def _lower(q: v.QV) -> Any:
    s = _str_of(q)
    return v.UNDEF if s is None else v.lower(s)


def _upper(q: v.QV) -> Any:
    s = _str_of(q)
    return v.UNDEF if s is None else v.upper(s)


def _substring(q: v.QV, start: v.QV) -> Any:
    s = _str_of(q)
    if s is None or start.kind != v.K_DOUBLE:
        return v.UNDEF
    i = start.value
    if i != i or i < 0 or i > v.utf16_len(s):
        return v.UNDEF
    return v.utf16_slice(s, int(i))


def _substring_len(q: v.QV, start: v.QV, length: v.QV) -> Any:
    s = _str_of(q)
    if s is None or start.kind != v.K_DOUBLE or length.kind != v.K_DOUBLE:
        return v.UNDEF
    i, n, size = start.value, length.value, v.utf16_len(s)
    if i != i or n != n or not (0 <= i < size) or n < 0 or n > size - i:
        return v.UNDEF
    return v.utf16_slice(s, int(i), int(n))


def _two_strings(fn: Callable[[str, str], Any], undefined: Any) -> Callable[[v.QV, v.QV], Any]:
    def impl(a: v.QV, b: v.QV) -> Any:
        x, y = _str_of(a), _str_of(b)
        if x is None or y is None:
            return undefined
        return fn(x, y)

    return impl


def _bool(x: bool) -> int:
    return v.TRUE if x else v.FALSE


def _is_defined(given: Sequence[str], fns: Sequence[Fn]) -> Fn:
    t, f = given[0], fns[0]
    return lambda m: v.is_defined(t, f(m))


def _is_null_str(_given: Sequence[str], fns: Sequence[Fn]) -> Fn:
    f = fns[0]
    return lambda m: v.TRUE if f(m) is None else v.FALSE


def _identity(_given: Sequence[str], fns: Sequence[Fn]) -> Fn:
    return fns[0]


BUILTINS: dict[str, list[Executor]] = {
    "abs": _math(abs),
    "exp": _math(v.safe_exp),
    "power": [
        Executor(
            "args",
            (v.NUM, v.NUM),
            True,
            v.NUM,
            lambda a, b: v.power(a.value, b.value) if a.kind == b.kind == v.K_DOUBLE else v.NAN,
        )
    ],
    "square": _math(lambda x: v.power(x, 2.0)),
    "ceiling": _math(lambda x: v.rounding(math.ceil, x)),
    "floor": _math(lambda x: v.rounding(math.floor, x)),
    "sign": _math(v.sign),
    "sqrt": _math(v.sqrt),
    "as_number": [
        Executor("args", (v.STR,), True, v.NUM, _as_number),
        Executor("args", (v.NUM,), False, v.NUM, build=_identity),
    ],
    "is_bool": [
        Executor("args", (v.BOOL,), True, v.BOOL, _is_bool),
        Executor("any", ("*",), False, v.BOOL, build=_const(v.FALSE)),
    ],
    "is_defined": [
        Executor("args", (t,), False, v.BOOL, build=_is_defined)
        for t in (v.STR, v.NUM, v.BOOL, v.UNDEF_T, v.NULL_T, v.QV_T)
    ],
    "is_null": [
        Executor("args", (v.STR,), False, v.BOOL, build=_is_null_str),
        Executor("args", (v.QV_T,), False, v.BOOL, build=lambda _t, fns: _qv_call(fns)),
        Executor("args", (v.NULL_T,), False, v.BOOL, build=_const(v.TRUE)),
        Executor("any", ("*",), False, v.BOOL, build=_const(v.FALSE)),
    ],
    "is_number": [
        Executor("args", (v.NUM,), True, v.BOOL, _is_number),
        Executor("any", ("*",), False, v.BOOL, build=_const(v.FALSE)),
    ],
    "is_string": [
        Executor("args", (v.STR,), True, v.BOOL, _is_string),
        Executor("any", ("*",), False, v.BOOL, build=_const(v.FALSE)),
    ],
    "concat": [Executor("varargs", (v.STR, v.STR, v.STR), True, v.STR, _concat)],
    "length": [Executor("args", (v.STR,), True, v.NUM, _length)],
    "lower": [Executor("args", (v.STR,), True, v.STR, _lower)],
    "upper": [Executor("args", (v.STR,), True, v.STR, _upper)],
    "substring": [
        Executor("args", (v.STR, v.NUM), True, v.STR, _substring),
        Executor("args", (v.STR, v.NUM, v.NUM), True, v.STR, _substring_len),
    ],
    "index_of": [
        Executor(
            "args",
            (v.STR, v.STR),
            True,
            v.NUM,
            _two_strings(lambda a, b: float(v.utf16_index(a, b)), v.NAN),
        )
    ],
    "starts_with": [
        Executor(
            "args",
            (v.STR, v.STR),
            True,
            v.BOOL,
            _two_strings(lambda a, b: _bool(a.startswith(b)), 0),
        )
    ],
    "ends_with": [
        Executor(
            "args", (v.STR, v.STR), True, v.BOOL, _two_strings(lambda a, b: _bool(a.endswith(b)), 0)
        )
    ],
    "contains": [
        Executor("args", (v.STR, v.STR), True, v.BOOL, _two_strings(lambda a, b: _bool(b in a), 0))
    ],
}


def _qv_call(fns: Sequence[Fn]) -> Fn:
    f = fns[0]
    return lambda m: _is_null_qv(f(m))


# --- JSON paths ($body queries and twin_change_includes) ------------------------------------------

_JP_IDENT = r"[^()<>@,;:\\\"/\[\]?={}.\t\n\r]+"
_JP_STEP = re.compile(rf"({_JP_IDENT})(?:\[([0-9]+)\])?")

TWIN_PREFIXES = ("properties.reported.", "properties.desired.", "tags.")


def parse_json_path(path: str) -> tuple[tuple[str, int | None], ...] | str:
    """The steps of a supported JSON path (``a.b[0].c``), or an error message."""
    if not path:
        return "the query is empty"
    steps: list[tuple[str, int | None]] = []
    for part_no, part in enumerate(path.split(".")):
        m = _JP_STEP.fullmatch(part)
        if m is None or m.group(1).isdigit():
            where = "empty segment" if not part else f"unsupported segment '{part}'"
            return f"{where} at part {part_no + 1} of '{path}'"
        steps.append((m.group(1), int(m.group(2)) if m.group(2) is not None else None))
    return tuple(steps)
