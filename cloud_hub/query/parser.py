"""Recursive-descent parser for IoT Hub queries and conditions.

Grammar (keywords case-insensitive)::

    query      := SELECT [TOP int] ('*' | item (',' item)*) FROM source
                  [WHERE cond] [GROUP BY path (',' path)*]
    item       := (path | COUNT '(' ')' | (AVG|SUM|MIN|MAX) '(' path ')') [AS name]
    source     := devices | devices.modules | devices.jobs
    cond       := and (OR and)*
    and        := not (AND not)*
    not        := NOT not | compare
    compare    := sum [(= | != | <> | < | <= | > | >=) sum | (IN | NIN | NOT IN) array]
    sum        := product (('+' | '-') product)*
    product    := unary (('*' | '/' | '%') unary)*
    unary      := ('-' | '+') unary | primary
    primary    := literal | array | '(' cond ')' | name '(' [cond (',' cond)*] ')' | path
    path       := name ('.' (name | [[escaped]]) | '[' (int | string) ']')*
"""

from __future__ import annotations

from typing import Any

from cloud_hub.query import functions
from cloud_hub.query.errors import QueryError
from cloud_hub.query.lexer import EOF, ESCAPED, IDENT, NUMBER, OP, STRING, Token, tokenize
from cloud_hub.query.syntax import (
    UNDEFINED,
    Aggregate,
    Binary,
    Call,
    Condition,
    Expr,
    In,
    Literal,
    Path,
    Query,
    SelectItem,
    Unary,
)

RESERVED = frozenset(
    {"SELECT", "TOP", "FROM", "WHERE", "GROUP", "BY", "AS", "AND", "OR", "NOT", "IN", "NIN"}
)
_CONSTANTS: dict[str, Any] = {"TRUE": True, "FALSE": False, "NULL": None, "UNDEFINED": UNDEFINED}
_COMPARISONS = frozenset({"=", "!=", "<>", "<", "<=", ">", ">="})
_AGGREGATES = frozenset({"COUNT", "AVG", "SUM", "MIN", "MAX"})
_MAX_DEPTH = 40  # nesting of parentheses / NOT / signs
_MAX_TREE_DEPTH = 120


def parse_query(text: str) -> Query:
    """Parse a full ``SELECT ... FROM ...`` query; raises QueryError."""
    return _Parser(text).query()


def parse_condition(text: str) -> Condition:
    """Parse a bare condition (WHERE clause body / deployment target condition)."""
    parser = _Parser(text)
    expr = parser.condition()
    parser.expect_end("AND, OR or the end of the condition")
    _check_tree_depth(expr, text)
    return Condition(expr, text)


class _Parser:
    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise QueryError("the query must be a string", "", 0)
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0
        self.item_offsets: dict[str, int] = {}

    # -- token helpers -------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.tokens[self.pos]
        if tok.kind != EOF:
            self.pos += 1
        return tok

    def error(self, expected: str, tok: Token | None = None) -> QueryError:
        tok = tok or self.tok
        return QueryError(f"expected {expected} but found {tok.describe()}", self.text, tok.offset)

    def is_keyword(self, word: str, tok: Token | None = None) -> bool:
        tok = tok or self.tok
        return tok.kind == IDENT and tok.value.upper() == word

    def is_op(self, op: str, tok: Token | None = None) -> bool:
        tok = tok or self.tok
        return tok.kind == OP and tok.value == op

    def expect_keyword(self, word: str) -> Token:
        if not self.is_keyword(word):
            raise self.error(word)
        return self.advance()

    def expect_op(self, op: str, expected: str | None = None) -> Token:
        if not self.is_op(op):
            raise self.error(expected or f"'{op}'")
        return self.advance()

    def expect_end(self, expected: str) -> None:
        if self.tok.kind != EOF:
            raise self.error(expected)

    # -- query ---------------------------------------------------------------------------------
    def query(self) -> Query:
        self.expect_keyword("SELECT")
        top = None
        if self.is_keyword("TOP"):
            self.advance()
            tok = self.tok
            if tok.kind != NUMBER or type(tok.value) is not int:
                raise self.error("an integer after TOP")
            self.advance()
            top = tok.value
        select = self.select_list()
        if not self.is_keyword("FROM"):
            raise self.error("FROM" if select is None else "',' or FROM")
        self.advance()
        source = self.source()
        where = None
        if self.is_keyword("WHERE"):
            self.advance()
            start = self.tok.offset
            expr = self.condition()
            _check_tree_depth(expr, self.text, start)
            where = Condition(expr, self.text[start : self.tokens[self.pos - 1].end])
        group_by: list[Path] = []
        group_tok = self.tok
        if self.is_keyword("GROUP"):
            self.advance()
            self.expect_keyword("BY")
            group_by.append(self.path_only("a property path to group by"))
            while self.is_op(","):
                self.advance()
                group_by.append(self.path_only("a property path to group by"))
        if group_by:
            self.expect_end("',' or the end of the query")
        elif where is not None:
            self.expect_end("AND, OR, GROUP BY or the end of the query")
        else:
            self.expect_end("WHERE, GROUP BY or the end of the query")
        query = Query(source, select, where, tuple(group_by), top, self.text)
        self.check_projection(query, group_tok)
        return query

    def select_list(self) -> tuple[SelectItem, ...] | None:
        if self.is_op("*"):
            self.advance()
            return None
        items: list[SelectItem] = []
        aliases: set[str] = set()
        while True:
            tok = self.tok
            item = self.select_item(len(items) + 1)
            if item.alias in aliases:
                raise QueryError(f"duplicate name {item.alias!r} in SELECT", self.text, tok.offset)
            aliases.add(item.alias)
            self.item_offsets[item.alias] = tok.offset
            items.append(item)
            if not self.is_op(","):
                return tuple(items)
            self.advance()

    def select_item(self, index: int) -> SelectItem:
        tok = self.tok
        expr: Path | Aggregate
        if tok.kind == IDENT and tok.value.upper() in _AGGREGATES and self.is_op("(", self.peek()):
            name = tok.value.upper()
            self.advance()
            self.advance()
            arg = None
            if name == "COUNT":
                self.expect_op(")", "')' (COUNT takes no argument)")
            else:
                arg = self.path_only(f"a property path inside {name}()")
                self.expect_op(")")
            expr = Aggregate(name, arg)
            alias = f"${index}"
        else:
            if tok.kind != IDENT or tok.value.upper() in RESERVED:
                raise self.error("'*', a property path or an aggregate such as COUNT()")
            expr = self.path_only("a property path")
            last = next((p for p in reversed(expr.parts) if isinstance(p, str)), None)
            alias = last if last is not None else f"${index}"
        if self.is_keyword("AS"):
            self.advance()
            if self.tok.kind != IDENT:
                raise self.error("a name after AS")
            alias = self.advance().value
        return SelectItem(expr, alias)

    def source(self) -> str:
        tok = self.tok
        if tok.kind != IDENT or tok.value.lower() != "devices":
            raise self.error("devices, devices.modules or devices.jobs")
        self.advance()
        if self.is_op("."):
            self.advance()
            sub = self.tok
            if sub.kind != IDENT or sub.value.lower() not in ("modules", "jobs"):
                raise self.error("modules or jobs after 'devices.'")
            self.advance()
            return "devices." + sub.value.lower()
        return "devices"

    def check_projection(self, query: Query, group_tok: Token) -> None:
        if not query.is_aggregate:
            return
        if query.select is None:
            raise QueryError(
                "SELECT * cannot be combined with GROUP BY", self.text, group_tok.offset
            )
        for item in query.select:
            if isinstance(item.expr, Path) and item.expr not in query.group_by:
                raise QueryError(
                    f"{item.expr} must appear in GROUP BY or inside an aggregate such as COUNT()",
                    self.text,
                    self.item_offsets.get(item.alias, 0),
                )

    # -- conditions ----------------------------------------------------------------------------
    def condition(self) -> Expr:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise QueryError("condition nested too deeply", self.text, self.tok.offset)
        operands = [self.and_expr()]
        while self.is_keyword("OR"):
            self.advance()
            operands.append(self.and_expr())
        self.depth -= 1
        return _balanced("OR", operands)

    def and_expr(self) -> Expr:
        operands = [self.not_expr()]
        while self.is_keyword("AND"):
            self.advance()
            operands.append(self.not_expr())
        return _balanced("AND", operands)

    def not_expr(self) -> Expr:
        if self.is_keyword("NOT"):
            self.advance()
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise QueryError("condition nested too deeply", self.text, self.tok.offset)
            operand = self.not_expr()
            self.depth -= 1
            return Unary("NOT", operand)
        return self.compare()

    def compare(self) -> Expr:
        left = self.sum_expr()
        tok = self.tok
        if tok.kind == OP and tok.value in _COMPARISONS:
            self.advance()
            op = "!=" if tok.value == "<>" else tok.value
            return Binary(op, left, self.sum_expr())
        if self.is_keyword("IN") or self.is_keyword("NIN"):
            negated = self.advance().value.upper() == "NIN"
            return In(left, self.array("'[' starting the list after IN"), negated)
        if self.is_keyword("NOT") and self.is_keyword("IN", self.peek()):
            self.advance()
            self.advance()
            return In(left, self.array("'[' starting the list after NOT IN"), True)
        return left

    def sum_expr(self) -> Expr:
        left = self.product()
        while self.tok.kind == OP and self.tok.value in ("+", "-"):
            op = self.advance().value
            left = Binary(op, left, self.product())
        return left

    def product(self) -> Expr:
        left = self.unary()
        while self.tok.kind == OP and self.tok.value in ("*", "/", "%"):
            op = self.advance().value
            left = Binary(op, left, self.unary())
        return left

    def unary(self) -> Expr:
        if self.tok.kind == OP and self.tok.value in ("-", "+"):
            op = self.advance().value
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise QueryError("expression nested too deeply", self.text, self.tok.offset)
            operand = self.unary()
            self.depth -= 1
            if isinstance(operand, Literal) and type(operand.value) in (int, float):
                return Literal(-operand.value if op == "-" else operand.value)
            return Unary(op, operand)
        return self.primary()

    def primary(self) -> Expr:
        tok = self.tok
        if tok.kind in (NUMBER, STRING):
            self.advance()
            return Literal(tok.value)
        if self.is_op("("):
            self.advance()
            expr = self.condition()
            self.expect_op(")", "')' or an operator")
            return expr
        if self.is_op("["):
            return Literal(self.array("'['"))
        if tok.kind == IDENT:
            upper = tok.value.upper()
            if upper in _CONSTANTS:
                self.advance()
                return Literal(_CONSTANTS[upper])
            if upper in RESERVED:
                raise self.error("a value, property path or function")
            if self.is_op("(", self.peek()):
                return self.call()
            return self.path()
        raise self.error("a value, property path or function")

    def call(self) -> Expr:
        tok = self.advance()
        fn = functions.lookup(tok.value)
        if fn is None:
            if tok.value.upper() in _AGGREGATES:
                raise QueryError(
                    f"aggregate {tok.value.upper()}() is only allowed in SELECT",
                    self.text,
                    tok.offset,
                )
            raise QueryError(f"unknown function {tok.value!r}", self.text, tok.offset)
        self.advance()  # (
        args: list[Expr] = []
        if not self.is_op(")"):
            args.append(self.condition())
            while self.is_op(","):
                self.advance()
                args.append(self.condition())
        self.expect_op(")", "',' or ')' closing the argument list")
        if not fn.min_args <= len(args) <= fn.max_args:
            want = (
                str(fn.min_args)
                if fn.min_args == fn.max_args
                else f"{fn.min_args} to {fn.max_args}"
            )
            raise QueryError(
                f"{fn.name}() takes {want} argument(s), got {len(args)}", self.text, tok.offset
            )
        return Call(fn.name, tuple(args))

    def array(self, expected: str) -> tuple[Any, ...]:
        self.expect_op("[", expected)
        values: list[Any] = []
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise QueryError("array nested too deeply", self.text, self.tok.offset)
        if self.is_op("]"):
            self.advance()
            self.depth -= 1
            return ()
        while True:
            values.append(self.constant())
            if self.is_op("]"):
                self.advance()
                self.depth -= 1
                return tuple(values)
            self.expect_op(",", "',' or ']' in the list")

    def constant(self) -> Any:
        tok = self.tok
        sign = 1
        if tok.kind == OP and tok.value in ("-", "+"):
            sign = -1 if tok.value == "-" else 1
            self.advance()
            if self.tok.kind != NUMBER:
                raise self.error("a number after the sign")
            return sign * self.advance().value
        if tok.kind in (NUMBER, STRING):
            return self.advance().value
        if tok.kind == IDENT and tok.value.upper() in _CONSTANTS:
            self.advance()
            return _CONSTANTS[tok.value.upper()]
        if self.is_op("["):
            return self.array("'['")
        raise self.error("a constant (string, number, true, false, null) in the list")

    # -- paths ---------------------------------------------------------------------------------
    def path_only(self, expected: str) -> Path:
        tok = self.tok
        if tok.kind != IDENT or tok.value.upper() in RESERVED:
            raise self.error(expected)
        return self.path()

    def path(self) -> Path:
        parts: list[str | int] = [self.advance().value]
        while True:
            if self.is_op("."):
                self.advance()
                tok = self.tok
                if tok.kind in (IDENT, ESCAPED):
                    parts.append(self.advance().value)
                else:
                    raise self.error("a property name or [[escaped name]] after '.'")
            elif self.tok.kind == ESCAPED:
                parts.append(self.advance().value)
            elif self.is_op("["):
                self.advance()
                tok = self.tok
                if tok.kind == NUMBER and type(tok.value) is int:
                    parts.append(tok.value)
                elif tok.kind == STRING:
                    parts.append(tok.value)
                else:
                    raise self.error("an array index or a quoted property name inside '[ ]'")
                self.advance()
                self.expect_op("]")
            else:
                return Path(_strip_collection(tuple(parts)))


def _strip_collection(parts: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """``devices.modules.moduleId`` / ``devices.jobs.jobId`` / ``devices.deviceId`` -> relative."""
    if len(parts) > 1 and parts[0] == "devices":
        if len(parts) > 2 and parts[1] in ("modules", "jobs"):
            return parts[2:]
        return parts[1:]
    return parts


def _balanced(op: str, operands: list[Expr]) -> Expr:
    """A balanced tree for an AND/OR chain (both are associative, also three-valued), so a
    target condition with hundreds of ``OR deviceId = ...`` terms stays shallow."""
    if len(operands) == 1:
        return operands[0]
    mid = len(operands) // 2
    return Binary(op, _balanced(op, operands[:mid]), _balanced(op, operands[mid:]))


def _check_tree_depth(expr: Expr, text: str, offset: int = 0) -> None:
    stack: list[tuple[Expr, int]] = [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_TREE_DEPTH:
            raise QueryError(
                f"expression nested too deeply (more than {_MAX_TREE_DEPTH} levels)", text, offset
            )
        if isinstance(node, Binary):
            stack.append((node.left, depth + 1))
            stack.append((node.right, depth + 1))
        elif isinstance(node, Unary):
            stack.append((node.operand, depth + 1))
        elif isinstance(node, In):
            stack.append((node.operand, depth + 1))
        elif isinstance(node, Call):
            stack.extend((arg, depth + 1) for arg in node.args)
