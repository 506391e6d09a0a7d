"""Built-in functions of the IoT Hub query language (type checks, math, strings).

Every function takes evaluated JSON values (``UNDEFINED`` for a missing property) and returns a
JSON value; arguments of the wrong type give ``UNDEFINED``, as IoT Hub does, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloud_hub.query.syntax import UNDEFINED


def is_number(v: Any) -> bool:
    return (type(v) is int or type(v) is float) and v is not UNDEFINED


def _num1(fn: Callable[[float], Any]) -> Callable[..., Any]:
    def apply(x: Any) -> Any:
        if not is_number(x):
            return UNDEFINED
        try:
            result = fn(x)
        except (ValueError, OverflowError, ZeroDivisionError):
            return UNDEFINED
        if isinstance(result, float) and (math.isnan(result) or math.isinf(result)):
            return UNDEFINED
        return result

    return apply


def _power(x: Any, y: Any) -> Any:
    if not (is_number(x) and is_number(y)):
        return UNDEFINED
    try:
        result = math.pow(x, y)
    except (ValueError, OverflowError, ZeroDivisionError):
        return UNDEFINED
    return UNDEFINED if math.isnan(result) or math.isinf(result) else result


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _as_number(x: Any) -> Any:
    if is_number(x):
        return x
    if type(x) is str:
        text = x.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            value = float(text)
        except ValueError:
            return UNDEFINED
        return UNDEFINED if math.isnan(value) or math.isinf(value) else value
    return UNDEFINED


def _strings(fn: Callable[..., Any]) -> Callable[..., Any]:
    def apply(*args: Any) -> Any:
        if any(type(a) is not str for a in args):
            return UNDEFINED
        return fn(*args)

    return apply


def _substring(s: Any, start: Any, length: Any = None) -> Any:
    if type(s) is not str or type(start) is not int:
        return UNDEFINED
    if length is None:
        return s[max(start, 0) :]
    if type(length) is not int:
        return UNDEFINED
    begin = max(start, 0)
    return s[begin : begin + max(length, 0)]


def _is_primitive(v: Any) -> bool:
    return v is None or type(v) in (str, bool, int, float)


@dataclass(frozen=True)
class Function:
    name: str
    min_args: int
    max_args: int
    impl: Callable[..., Any]


def _tc(name: str, check: Callable[[Any], bool]) -> Function:
    """An IS_* type check: it takes UNDEFINED like any other value and answers false."""
    return Function(name, 1, 1, lambda v: v is not UNDEFINED and check(v))


_FUNCTIONS: list[Function] = [
    _tc("IS_DEFINED", lambda v: True),
    _tc("IS_NULL", lambda v: v is None),
    _tc("IS_BOOL", lambda v: type(v) is bool),
    _tc("IS_NUMBER", is_number),
    _tc("IS_STRING", lambda v: type(v) is str),
    _tc("IS_OBJECT", lambda v: type(v) is dict),
    _tc("IS_ARRAY", lambda v: type(v) in (list, tuple)),
    _tc("IS_PRIMITIVE", _is_primitive),
    Function("AS_NUMBER", 1, 1, _as_number),
    Function("ABS", 1, 1, _num1(abs)),
    Function("CEILING", 1, 1, _num1(math.ceil)),
    Function("FLOOR", 1, 1, _num1(math.floor)),
    Function("EXP", 1, 1, _num1(math.exp)),
    Function("LOG", 1, 1, _num1(math.log)),
    Function("LOG10", 1, 1, _num1(math.log10)),
    Function("SIGN", 1, 1, _num1(_sign)),
    Function("SQUARE", 1, 1, _num1(lambda x: x * x)),
    Function("SQRT", 1, 1, _num1(math.sqrt)),
    Function("POWER", 2, 2, _power),
    Function("CONCAT", 2, 64, _strings(lambda *a: "".join(a))),
    Function("LENGTH", 1, 1, _strings(len)),
    Function("LOWER", 1, 1, _strings(str.lower)),
    Function("UPPER", 1, 1, _strings(str.upper)),
    Function("SUBSTRING", 2, 3, _substring),
    Function("INDEX_OF", 2, 2, _strings(str.find)),
    Function("STARTS_WITH", 2, 2, _strings(str.startswith)),
    Function("ENDS_WITH", 2, 2, _strings(str.endswith)),
    Function("CONTAINS", 2, 2, _strings(lambda s, frag: frag in s)),
]

FUNCTIONS: dict[str, Function] = {f.name: f for f in _FUNCTIONS}

# Other spellings seen in IoT Hub / IoT Edge documentation and samples.
ALIASES: dict[str, str] = {
    "STARTSWITH": "STARTS_WITH",
    "ENDSWITH": "ENDS_WITH",
    "INDEXOF": "INDEX_OF",
    "IS_BOOLEAN": "IS_BOOL",
}


def lookup(name: str) -> Function | None:
    upper = name.upper()
    return FUNCTIONS.get(ALIASES.get(upper, upper))
