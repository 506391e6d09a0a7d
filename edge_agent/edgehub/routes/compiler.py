"""Type checker and compiler: a condition's syntax tree becomes one Python closure.

Type errors are compile errors with the position of the operator or function, as in IoT Edge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge_agent.edgehub.routes import values as v
from edge_agent.edgehub.routes.builtins import BUILTINS, TWIN_PREFIXES, Fn, parse_json_path
from edge_agent.edgehub.routes.errors import RouteError
from edge_agent.edgehub.routes.lexer import Token, unescape
from edge_agent.edgehub.routes.message import (
    MISSING,
    TWIN_CHANGE_SOURCE,
    RouteMessage,
    is_bad,
    source_key,
)
from edge_agent.edgehub.routes.parser import Node

Condition = Callable[[RouteMessage], int]
Typed = tuple[str, Fn]

_TWIN_KEY = source_key(TWIN_CHANGE_SOURCE)
_CMP: dict[str, Callable[[int], bool]] = {
    "EQ": lambda c: c == 0,
    "NE": lambda c: c != 0,
    "LT": lambda c: c < 0,
    "LE": lambda c: c <= 0,
    "GT": lambda c: c > 0,
    "GE": lambda c: c >= 0,
}


def _tri(x: bool) -> int:
    return v.TRUE if x else v.FALSE


class _Compiler:
    def __init__(self, text: str, route_source_key: str) -> None:
        self.text = text
        self.twin_source = route_source_key == _TWIN_KEY

    def error(self, tok: Token, message: str) -> RouteError:
        return RouteError(message, self.text, tok.start, len(tok.text))

    def operand_error(self, tok: Token, expected: list[str], given: list[str]) -> RouteError:
        arity = "unary " if len(expected) == 1 else "binary "
        have = " and ".join(f"'{g}'" for g in given)
        want = " and ".join(f"'{e}'" for e in expected)
        return self.error(
            tok, f"Invalid operands to {arity}operator '{tok.text}': have {have}, expected {want}"
        )

    def check_operands(self, tok: Token, expected: str, left: Typed, right: Typed) -> str:
        """IoT Edge's operand rule: both of the expected type, or query values mixed with it."""
        lt, rt = left[0], right[0]
        ok = all(self._compatible(expected, t) for t in (lt, rt))
        if not ok:
            raise self.operand_error(tok, [expected, expected], [lt, rt])
        return v.QV_T if v.QV_T in (lt, rt) else expected

    @staticmethod
    def _compatible(expected: str, given: str) -> bool:
        if expected == given:
            return True
        return (given == v.QV_T and expected in v.QV_SUPPORTED) or (
            expected == v.QV_T and given in v.QV_SUPPORTED
        )

    def visit(self, node: Node) -> Typed:
        method: Callable[[Node], Typed] = getattr(self, "visit_" + node.kind)
        return method(node)

    # --- leaves ---------------------------------------------------------------------------------

    def visit_literal(self, node: Node) -> Typed:
        tok = node.token
        kind = tok.kind
        if kind in ("TRUE", "FALSE"):
            b = v.TRUE if kind == "TRUE" else v.FALSE
            return v.BOOL, lambda _m: b
        if kind == "STRING":
            s = unescape(tok.text[1:-1])
            return v.STR, lambda _m: s
        if kind in ("INTEGER", "REAL"):
            try:
                num = float(tok.text)
            except ValueError:  # pragma: no cover - the lexer only yields valid numbers
                return v.UNDEF_T, lambda _m: v.UNDEF
            return v.NUM, lambda _m: num
        if kind == "HEX":
            digits = tok.text[2:].lstrip("0") or "0"
            if len(digits) > 16:
                return v.UNDEF_T, lambda _m: v.UNDEF
            raw = int(digits, 16)
            hexnum = float(raw - (1 << 64) if raw >= 1 << 63 else raw)
            return v.NUM, lambda _m: hexnum
        if kind == "NULL":
            return v.NULL_T, lambda _m: v.NULL
        return v.UNDEF_T, lambda _m: v.UNDEF

    def visit_property(self, node: Node) -> Typed:
        name = node.token.text.lower()

        def prop(m: RouteMessage) -> Any:
            val = m._props.get(name, MISSING)
            return v.UNDEF if val is MISSING else val

        return v.STR, prop

    def _sys_property(self, name: str) -> Typed:
        if "[" in name or "]" in name:
            return v.UNDEF_T, lambda _m: v.UNDEF
        key = name.lower()

        def sysprop(m: RouteMessage) -> Any:
            val = m._sys.get(key, MISSING)
            return v.UNDEF if val is MISSING else val

        return v.STR, sysprop

    def _body_query(self, tok: Token, name: str) -> Typed | None:
        """A ``$body.<path>`` query, or None when ``name`` is not one."""
        if not name.lower().startswith("$body."):
            return None
        steps = parse_json_path(name[len("$body.") :])
        if isinstance(steps, str):
            raise self.error(
                tok,
                f"Invalid arguments to built-in function '{name}': Error in $body query: {steps}",
            )

        def body(m: RouteMessage) -> v.QV:
            val = m.query(steps)
            if is_bad(val):
                return v.QV_UNDEF
            if val is MISSING:
                return v.QV_NULL
            q = v.from_json(val)
            return v.QV_UNDEF if q.kind == v.K_OBJECT else q

        return v.QV_T, body

    def visit_sysprop(self, node: Node) -> Typed:
        """``$name``: an application property of that name wins, else the body or system value."""
        name = node.token.text
        body = self._body_query(node.token, name)
        if "[" in name or "]" in name:
            return body if body is not None else (v.UNDEF_T, lambda _m: v.UNDEF)
        key = name.lower()
        if body is not None:
            body_fn = body[1]

            def prop_or_body(m: RouteMessage) -> Any:
                val = m._props.get(key, MISSING)
                return body_fn(m) if val is MISSING else v.QV(v.K_STRING, val)

            return v.QV_T, prop_or_body
        alt_t, alt_fn = self._sys_property(name[1:])

        def prop_or_sys(m: RouteMessage) -> Any:
            val = m._props.get(key, MISSING)
            return alt_fn(m) if val is MISSING else val

        return alt_t, prop_or_sys

    def visit_sysprop_escaped(self, node: Node) -> Typed:
        """``{$name}``: always the system property or body query, never the application one."""
        name = node.token.text
        body = self._body_query(node.token, name)
        return body if body is not None else self._sys_property(name[1:])

    # --- functions ------------------------------------------------------------------------------

    def visit_call(self, node: Node) -> Typed:
        tok = node.token
        name = tok.text.lower()
        if name == "twin_change_includes":
            if not self.twin_source:
                raise self.error(
                    tok,
                    f"Invalid built-in function '{tok.text}' (only for routes FROM "
                    f"{TWIN_CHANGE_SOURCE})",
                )
            return self._twin_change_includes(tok, node.arg_text)
        executors = BUILTINS.get(name)
        if executors is None:
            raise self.error(tok, f"Invalid built-in function '{tok.text}'")
        args = [self.visit(a) for a in node.children]
        given = [t for t, _ in args]
        for ex in executors:
            if ex.matches(given):
                return ex.result, ex.compile(given, [f for _, f in args])
        shown = ", ".join(given)
        raise self.error(
            tok, f"Invalid arguments to built-in function '{tok.text}': {tok.text}({shown})"
        )

    def _twin_change_includes(self, tok: Token, path: str) -> Typed:
        steps = parse_json_path(path)
        if isinstance(steps, str):
            raise self.error(tok, f"Invalid arguments to built-in function '{tok.text}': {steps}")
        if not path.lower().startswith(TWIN_PREFIXES):
            supported = ", ".join(f"'{p}'" for p in TWIN_PREFIXES)
            raise self.error(tok, f"'{path}' is not supported. Supported prefixes: {supported}.")

        def includes(m: RouteMessage) -> int:
            val = m.query(steps)
            if is_bad(val):
                return v.UNKNOWN
            return v.FALSE if val is MISSING else v.TRUE

        return v.BOOL, includes

    # --- operators ------------------------------------------------------------------------------

    def visit_unary(self, node: Node) -> Typed:
        tok = node.token
        t, f = self.visit(node.children[0])
        if tok.kind == "MINUS":
            if t == v.NUM:
                return v.NUM, lambda m: -f(m)
            if t == v.QV_T:
                return v.QV_T, lambda m: _qv_neg(f(m))
            raise self.operand_error(tok, [v.NUM], [t])
        if t == v.NULL_T:
            return v.BOOL, lambda _m: v.TRUE
        if t == v.BOOL:
            return v.BOOL, lambda m: -f(m)
        if t == v.QV_T:
            return v.BOOL, lambda m: -v.qv_to_bool(f(m))
        raise self.operand_error(tok, [v.BOOL], [t])

    def visit_binary(self, node: Node) -> Typed:
        tok = node.token
        op = tok.kind
        left = self.visit(node.children[0])
        right = self.visit(node.children[1])
        if op in ("AND", "OR"):
            return self._logical(tok, left, right)
        if op == "COALESCE":
            return self._coalesce(tok, left, right)
        if op == "CONCAT":
            self.check_operands(tok, v.STR, left, right)
            ex = BUILTINS["concat"][0]
            return v.STR, ex.compile([left[0], right[0]], [left[1], right[1]])
        if op in _CMP:
            return self._compare(tok, left, right)
        return self._arith(tok, left, right)

    def _arith(self, tok: Token, left: Typed, right: Typed) -> Typed:
        t = self.check_operands(tok, v.NUM, left, right)
        num_op = _ARITH[tok.kind]
        lf, rf = left[1], right[1]
        if t == v.NUM:
            return v.NUM, lambda m: num_op(lf(m), rf(m))
        lc, rc = _qv_fn(left), _qv_fn(right)

        def qv_arith(m: RouteMessage) -> v.QV:
            a, b = lc(m), rc(m)
            if a.kind == v.K_DOUBLE and b.kind == v.K_DOUBLE:
                return v.QV(v.K_DOUBLE, num_op(a.value, b.value))
            return v.QV_UNDEF

        return v.QV_T, qv_arith

    def _compare(self, tok: Token, left: Typed, right: Typed) -> Typed:
        lt = left[0]
        t = self.check_operands(tok, lt, left, right)
        test = _CMP[tok.kind]
        lf, rf = left[1], right[1]
        if t == v.QV_T:
            lc, rc = _qv_fn(left), _qv_fn(right)

            def cmp_qv(m: RouteMessage) -> int:
                a, b = lc(m), rc(m)
                if a.kind == v.K_NONE or b.kind == v.K_NONE:
                    return v.UNKNOWN
                return _tri(test(v.cmp_qv(a, b)))

            return v.BOOL, cmp_qv
        if t == v.STR:

            def cmp_str(m: RouteMessage) -> int:
                a, b = lf(m), rf(m)
                if a is v.UNDEF or b is v.UNDEF or a is None or b is None:
                    return v.UNKNOWN
                return _tri(test(v.ordinal_cmp(a, b)))

            return v.BOOL, cmp_str
        if t == v.NUM:

            def cmp_num(m: RouteMessage) -> int:
                a, b = lf(m), rf(m)
                if a != a or b != b:
                    return v.UNKNOWN
                return _tri(test(0 if a == b else (-1 if a < b else 1)))

            return v.BOOL, cmp_num
        if t == v.BOOL:

            def cmp_bool(m: RouteMessage) -> int:
                a, b = lf(m), rf(m)
                if a == v.UNKNOWN or b == v.UNKNOWN:
                    return v.UNKNOWN
                return _tri(test(a - b))

            return v.BOOL, cmp_bool
        if t == v.NULL_T:
            const = _tri(test(0))
            return v.BOOL, lambda _m: const
        return v.BOOL, lambda _m: v.UNKNOWN

    def _logical(self, tok: Token, left: Typed, right: Typed) -> Typed:
        allowed = (v.NULL_T, v.BOOL, v.UNDEF_T, v.QV_T)
        lt, rt = left[0], right[0]
        if lt not in allowed or rt not in allowed:
            raise self.operand_error(tok, [v.BOOL, v.BOOL], [lt, rt])
        is_and = tok.kind == "AND"
        op3 = v.and3 if is_and else v.or3
        if is_and and v.NULL_T in (lt, rt) or (not is_and and lt == rt == v.NULL_T):
            return v.NULL_T, lambda _m: v.NULL
        if v.QV_T in (lt, rt):
            lc, rc = _qv_fn(left), _qv_fn(right)

            def qv_logic(m: RouteMessage) -> int:
                a, b = lc(m), rc(m)
                if a.kind == v.K_BOOL and b.kind == v.K_BOOL:
                    return op3(a.value, b.value)
                return v.UNKNOWN

            return v.BOOL, qv_logic
        lb, rb = _bool_fn(left), _bool_fn(right)
        return v.BOOL, lambda m: op3(lb(m), rb(m))

    def _coalesce(self, tok: Token, left: Typed, right: Typed) -> Typed:
        lt = left[0]
        t = self.check_operands(tok, lt, left, right)
        if lt == v.UNDEF_T:
            return right
        if t == v.QV_T:
            lc, rc = _qv_fn(left), _qv_fn(right)
            return v.QV_T, lambda m: _first_defined(lc(m), rc, m)
        lf, rf = left[1], right[1]

        def coalesce(m: RouteMessage) -> Any:
            a = lf(m)
            return a if v.is_defined(lt, a) == v.TRUE else rf(m)

        return t, coalesce


def _first_defined(a: v.QV, rc: Fn, m: RouteMessage) -> Any:
    return a if a.kind != v.K_NONE else rc(m)


def _qv_fn(typed: Typed) -> Fn:
    t, f = typed
    if t == v.QV_T:
        return f
    return lambda m: v.to_qv(t, f(m))


def _bool_fn(typed: Typed) -> Fn:
    """Operand of AND/OR as a three-valued int (null counts as false, undefined as unknown)."""
    t, f = typed
    if t == v.BOOL:
        return f
    if t == v.NULL_T:
        return lambda _m: v.FALSE
    return lambda _m: v.UNKNOWN


def _qv_neg(q: v.QV) -> v.QV:
    return v.QV(v.K_DOUBLE, -q.value) if q.kind == v.K_DOUBLE else v.QV_UNDEF


_ARITH: dict[str, Callable[[float, float], float]] = {
    "PLUS": lambda a, b: a + b,
    "MINUS": lambda a, b: a - b,
    "MUL": lambda a, b: a * b,
    "DIV": v.div,
    "MOD": v.mod,
}


def compile_node(node: Node | None, text: str, route_source: str) -> Condition:
    """Compile a parsed condition; ``route_source`` decides if twin_change_includes is allowed."""
    if node is None:
        return lambda _m: v.UNKNOWN
    t, f = _Compiler(text, source_key(route_source)).visit(node)
    if t == v.BOOL:
        return f
    if t == v.NULL_T:
        return lambda _m: v.FALSE
    if t == v.QV_T:
        return lambda m: v.qv_to_bool(f(m))
    return lambda _m: v.UNKNOWN
