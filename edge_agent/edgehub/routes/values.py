"""Runtime values of the condition language and their C#-compatible operations.

Static types: ``STR`` (a property or string; runtime ``str``, ``None`` for a null property, or
``UNDEF``), ``NUM`` (float; NaN is undefined), ``BOOL`` (1 true, -1 false, 0 undefined), ``UNDEF``,
``NULL`` and ``QV`` (a dynamically typed ``$body`` query value).
"""

from __future__ import annotations

import math
import re
from typing import Any, Final


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


UNDEF: Final = _Sentinel("undefined")
NULL: Final = _Sentinel("null")

STR, NUM, BOOL, UNDEF_T, NULL_T, QV_T = "string", "number", "bool", "undefined", "null", "any"
QV_SUPPORTED = frozenset({NULL_T, NUM, STR, BOOL})

TRUE, FALSE, UNKNOWN = 1, -1, 0
NAN = float("nan")

# QueryValue kinds, in the order IoT Edge compares values of different kinds.
K_NONE, K_BOOL, K_DOUBLE, K_STRING, K_NULL, K_OBJECT = range(6)


class QV:
    """A dynamically typed value (from a ``$body`` query, or a static value mixed with one)."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: int, value: Any) -> None:
        self.kind = kind
        self.value = value

    def __repr__(self) -> str:
        return f"QV({self.kind}, {self.value!r})"


QV_UNDEF: Final = QV(K_NONE, None)
QV_NULL: Final = QV(K_NULL, None)


def to_qv(static_type: str, v: Any) -> QV:
    """Convert a statically typed value to a query value (undefined values become QV_UNDEF)."""
    if static_type == QV_T:
        return v
    if static_type == STR:
        return QV_UNDEF if v is UNDEF else QV(K_STRING, v)
    if static_type == NUM:
        return QV_UNDEF if v != v else QV(K_DOUBLE, v)
    if static_type == BOOL:
        return QV_UNDEF if v == UNKNOWN else QV(K_BOOL, v)
    if static_type == NULL_T:
        return QV(K_NULL, None)
    return QV_UNDEF


def from_json(value: Any) -> QV:
    if value is None:
        return QV(K_NULL, None)
    if isinstance(value, bool):
        return QV(K_BOOL, TRUE if value else FALSE)
    if isinstance(value, int | float):
        return QV(K_DOUBLE, float(value))
    if isinstance(value, str):
        return QV(K_STRING, value)
    return QV(K_OBJECT, value)


def qv_to_bool(v: QV) -> int:
    return v.value if v.kind == K_BOOL else UNKNOWN


def is_defined(static_type: str, v: Any) -> int:
    if static_type == STR:
        return FALSE if v is UNDEF else TRUE
    if static_type == NUM:
        return FALSE if v != v else TRUE
    if static_type == BOOL:
        return FALSE if v == UNKNOWN else TRUE
    if static_type == UNDEF_T:
        return FALSE
    if static_type == NULL_T:
        return TRUE
    return FALSE if v.kind == K_NONE else TRUE


# --- three-valued logic -------------------------------------------------------------------------


def and3(a: int, b: int) -> int:
    if a == FALSE or b == FALSE:
        return FALSE
    if a == UNKNOWN or b == UNKNOWN:
        return UNKNOWN
    return TRUE


def or3(a: int, b: int) -> int:
    if a == TRUE or b == TRUE:
        return TRUE
    if a == UNKNOWN or b == UNKNOWN:
        return UNKNOWN
    return FALSE


# --- arithmetic with .NET double semantics --------------------------------------------------------


def div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0:
            return NAN
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def mod(a: float, b: float) -> float:
    if b == 0 or math.isinf(a) or a != a or b != b:
        return NAN
    if math.isinf(b):
        return a
    return math.fmod(a, b)


def power(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except OverflowError:
        return math.inf if a > 0 or float(b).is_integer() and b % 2 == 0 else -math.inf
    except ValueError:
        if a == 0 and b < 0:
            odd = float(b).is_integer() and b % 2 == 1
            return math.copysign(math.inf, a) if odd else math.inf
        return NAN


def safe_exp(a: float) -> float:
    try:
        return math.exp(a)
    except OverflowError:
        return math.inf


def rounding(fn: Any, a: float) -> float:
    if math.isinf(a) or a != a:
        return a
    return float(fn(a))


def sign(a: float) -> float:
    return 0.0 if a == 0 else math.copysign(1.0, a)


def sqrt(a: float) -> float:
    return math.sqrt(a) if a >= 0 else NAN


# --- strings with .NET (UTF-16, ordinal) semantics ----------------------------------------------


def _units(s: str) -> str | bytes:
    """A representation whose indices are UTF-16 code units (the string itself when all BMP)."""
    if s.isascii() or max(s) <= "\uffff":
        return s
    return s.encode("utf-16-be")


def utf16_len(s: str) -> int:
    u = _units(s)
    return len(u) if isinstance(u, str) else len(u) // 2


def utf16_slice(s: str, start: int, length: int | None = None) -> str:
    u = _units(s)
    if isinstance(u, str):
        return u[start:] if length is None else u[start : start + length]
    end = None if length is None else 2 * (start + length)
    return u[2 * start : end].decode("utf-16-be", errors="replace")


def utf16_index(s: str, frag: str) -> int:
    u, f = _units(s), _units(frag)
    if isinstance(u, str) and isinstance(f, str):
        return u.find(f)
    ub = s.encode("utf-16-be")
    fb = frag.encode("utf-16-be")
    i = ub.find(fb)
    while i >= 0 and i % 2:
        i = ub.find(fb, i + 1)
    return i // 2 if i >= 0 else -1


def ordinal_cmp(a: str, b: str) -> int:
    if a == b:
        return 0
    if max(a, default="\0") > "\uffff" or max(b, default="\0") > "\uffff":
        ea, eb = a.encode("utf-16-be"), b.encode("utf-16-be")
        return -1 if ea < eb else 1
    return -1 if a < b else 1


def lower(s: str) -> str:
    out = s.lower()
    if len(out) == len(s):
        return out
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in s)


def upper(s: str) -> str:
    out = s.upper()
    if len(out) == len(s):
        return out
    return "".join(c if len(c.upper()) != 1 else c.upper() for c in s)


_NUMBER = re.compile(
    r"\s*(?P<lead>[+-])?\s*(?P<int>[0-9][0-9,]*)?(?:\.(?P<frac>[0-9]*))?"
    r"(?:[eE](?P<exp>[+-]?[0-9]+))?\s*(?P<trail>[+-])?\s*"
)


def parse_number(text: str) -> float:
    """.NET ``double.TryParse(NumberStyles.Any, InvariantCulture)`` for the forms devices send."""
    t = text.strip()
    neg = False
    if t.startswith("(") and t.endswith(")"):
        t, neg = t[1:-1], True
    special = t.lstrip("+-").strip()
    if special in ("Infinity", "\u221e"):
        return -math.inf if (t.startswith("-") != neg) else math.inf
    if special == "NaN":
        return NAN
    m = _NUMBER.fullmatch(t)
    if m is None or (m.group("int") is None and not m.group("frac")):
        return NAN
    if m.group("lead") and m.group("trail"):
        return NAN
    digits = (m.group("int") or "0").replace(",", "")
    literal = f"{digits}.{m.group('frac') or '0'}e{m.group('exp') or '0'}"
    try:
        value = float(literal)
    except ValueError:
        return NAN
    if (m.group("lead") or m.group("trail")) == "-":
        value = -value
    return -value if neg else value


def cmp_qv(a: QV, b: QV) -> int:
    """Order of two defined query values (kinds first, then values)."""
    if a.kind != b.kind:
        return -1 if a.kind < b.kind else 1
    if a.kind == K_BOOL or a.kind == K_DOUBLE:
        x, y = a.value, b.value
        if x == y or (x != x and y != y):
            return 0
        if x != x:
            return -1
        if y != y:
            return 1
        return -1 if x < y else 1
    if a.kind == K_STRING:
        if a.value is None or b.value is None:
            return 0 if a.value is b.value else (-1 if a.value is None else 1)
        return ordinal_cmp(a.value, b.value)
    if a.kind == K_NULL:
        return 0
    return 0 if a.value is b.value else -1
