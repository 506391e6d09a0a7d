"""Recursive-descent parser for routes and conditions (IoT Edge grammar and precedence)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_agent.edgehub.routes.errors import RouteError
from edge_agent.edgehub.routes.lexer import Token, check_tokens, tokenize

MAX_NESTING = 50  # parentheses and prefix operators inside each other
MAX_TREE_DEPTH = 120  # operators chained in one expression

# Binary operator levels, tightest first; all are left-associative.
_LEVELS: list[frozenset[str]] = [
    frozenset({"MUL", "DIV", "MOD"}),
    frozenset({"PLUS", "MINUS", "CONCAT"}),
    frozenset({"LT", "LE", "GT", "GE"}),
    frozenset({"EQ", "NE"}),
    frozenset({"AND"}),
    frozenset({"OR"}),
    frozenset({"COALESCE"}),
]
_LITERALS = frozenset({"STRING", "INTEGER", "HEX", "REAL", "TRUE", "FALSE", "NULL", "UNDEFINED"})


@dataclass(frozen=True, slots=True)
class Node:
    kind: str  # literal | property | sysprop | sysprop_escaped | call | unary | binary
    token: Token
    children: tuple[Node, ...] = ()
    arg_text: str = ""  # the raw argument text of a call (body-query builtins read it)
    depth: int = 1


@dataclass(frozen=True)
class Sink:
    type: str  # "system" | "function"
    name: str = ""  # system endpoint name ($upstream)
    func: str = ""  # function name (BrokeredEndpoint)
    address: str = ""

    @property
    def module(self) -> str | None:
        return self._parts()[0]

    @property
    def input(self) -> str | None:
        return self._parts()[1]

    def _parts(self) -> tuple[str | None, str | None]:
        if self.type != "function":
            return None, None
        items = self.address.strip().removeprefix("/").removesuffix("/").split("/")
        if len(items) != 4:
            return None, None
        return items[1], items[3]

    @property
    def key(self) -> str:
        """Identity of the endpoint (routes to the same key compete on priority)."""
        if self.type == "system":
            return self.name.lower()
        return f"module:{self.module}/{self.input}"

    def to_dict(self) -> dict[str, object]:
        if self.type == "system":
            return {"type": "system", "name": self.name}
        return {
            "type": "function",
            "func": self.func,
            "address": self.address,
            "module": self.module,
            "input": self.input,
        }


@dataclass(frozen=True)
class ParsedRoute:
    text: str
    source: str  # as IoT Edge's CustomMessageSource.Create normalises it
    condition: str  # the condition text ("true" when there is no WHERE)
    condition_node: Node | None
    condition_offset: int
    sink: Sink
    raw_source: str = field(default="")


def normalize_source(raw: str) -> str:
    s = raw.strip().rstrip("*")
    return s.rstrip("/") if len(s) > 1 else s


class _Parser:
    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "EOF":
            self.i += 1
        return tok

    def error(self, message: str, tok: Token | None = None) -> RouteError:
        tok = tok or self.tok
        return RouteError(message, self.text, tok.start, max(1, len(tok.text)))

    def unexpected(self, expected: str) -> RouteError:
        tok = self.tok
        if tok.kind in ("UNKNOWN_CHAR", "UNTERMINATED_STRING"):
            check_tokens(self.text, [tok])
        found = "end of input" if tok.kind == "EOF" else f"'{tok.text}'"
        return self.error(f"Syntax error: expected {expected}, found {found}")

    def expect(self, kind: str, what: str) -> Token:
        if self.tok.kind != kind:
            raise self.unexpected(what)
        return self.take()

    def node(self, kind: str, tok: Token, children: tuple[Node, ...], arg_text: str = "") -> Node:
        depth = 1 + max((c.depth for c in children), default=0)
        if depth > MAX_TREE_DEPTH:
            raise self.error("Syntax error: expression nested too deeply", tok)
        return Node(kind, tok, children, arg_text, depth)

    # --- conditions -----------------------------------------------------------------------------

    def expr(self, level: int = len(_LEVELS)) -> Node:
        if level == 0:
            return self.unary()
        left = self.expr(level - 1)
        ops = _LEVELS[level - 1]
        while self.tok.kind in ops:
            op = self.take()
            right = self.expr(level - 1)
            left = self.node("binary", op, (left, right))
        return left

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error("Syntax error: expression nested too deeply")

    def unary(self) -> Node:
        self._enter()
        try:
            tok = self.tok
            if tok.kind in ("MINUS", "NOT"):
                self.take()
                return self.node("unary", tok, (self.unary(),))
            return self.primary()
        finally:
            self.depth -= 1

    def primary(self) -> Node:
        tok = self.tok
        kind = tok.kind
        if kind == "LPAREN":
            self.take()
            inner = self.expr()
            if self.tok.kind != "RPAREN":
                raise self.unexpected("')'")
            self.take()
            return inner
        if kind in _LITERALS:
            return Node("literal", self.take())
        if kind == "SYS_PROP":
            return Node("sysprop", self.take())
        if kind == "LBRACE":
            self.take()
            prop = self.expect("SYS_PROP", "a system property after '{'")
            self.expect("RBRACE", "'}'")
            return Node("sysprop_escaped", prop)
        if kind == "ID":
            self.take()
            if self.tok.kind != "LPAREN":
                return Node("property", tok)
            self.take()
            args: list[Node] = []
            first = self.i
            if self.tok.kind != "RPAREN":
                args.append(self.expr())
                while self.tok.kind == "COMMA":
                    self.take()
                    args.append(self.expr())
            arg_text = "".join(t.text for t in self.tokens[first : self.i])
            if self.tok.kind != "RPAREN":
                raise self.unexpected("',' or ')'")
            self.take()
            return self.node("call", tok, tuple(args), arg_text)
        raise self.unexpected("an expression")

    # --- routes ---------------------------------------------------------------------------------

    def path(self) -> str:
        parts: list[str] = []
        self.expect("DIV", "a source path starting with '/'")
        while True:
            parts.append("/")
            parts.append(self.path_item())
            if self.tok.kind != "DIV":
                return "".join(parts)
            self.take()

    def path_item(self) -> str:
        if self.tok.kind == "MUL":
            return self.take().text
        # An identifier, optionally with {placeholder} parts as manifest templates carry them.
        pieces: list[str] = []
        while True:
            if self.tok.kind == "ID":
                pieces.append(self.take().text)
            elif self.tok.kind == "LBRACE":
                self.take()
                name = self.expect("ID", "a placeholder name")
                self.expect("RBRACE", "'}'")
                pieces.append("{" + name.text + "}")
            else:
                break
        if not pieces:
            raise self.unexpected("a source path segment")
        return "".join(pieces)

    def route(self) -> ParsedRoute:
        if self.tok.kind == "EOF":
            raise self.error("Syntax error: empty route")
        if self.tok.kind == "SELECT":
            self.take()
            self.expect("MUL", "'*' after SELECT")
        self.expect("FROM", "FROM")
        raw_source = self.path()
        condition, node, offset = "true", None, 0
        if self.tok.kind == "WHERE":
            self.take()
            first = self.tok
            node = self.expr()
            last = self.tokens[self.i - 1]
            condition = self.text[first.start : last.end]
            offset = first.start
        self.expect("INTO", "INTO" if node is not None else "WHERE or INTO")
        sink = self.sink()
        if self.tok.kind != "EOF":
            raise self.unexpected("end of route")
        return ParsedRoute(
            text=self.text,
            source=normalize_source(raw_source),
            condition=condition,
            condition_node=node,
            condition_offset=offset,
            sink=sink,
            raw_source=raw_source,
        )

    def sink(self) -> Sink:
        tok = self.tok
        if tok.kind == "SYS_PROP":
            self.take()
            if tok.text.lower() != "$upstream":
                raise self.error(f"System endpoint type '{tok.text}' not supported", tok)
            return Sink("system", name=tok.text)
        if tok.kind == "ID":
            self.take()
            self.expect("LPAREN", "'(' after the endpoint function")
            address = self.expect("STRING", "a quoted endpoint address")
            self.expect("RPAREN", "')'")
            if tok.text.lower() != "brokeredendpoint":
                raise self.error(f"Function endpoint type '{tok.text}' not supported", tok)
            return Sink("function", func=tok.text, address=address.text[1:-1])
        raise self.unexpected('$upstream or BrokeredEndpoint("/modules/<m>/inputs/<i>")')


def parse_condition(text: str) -> Node | None:
    """Parse a bare condition; ``None`` for an empty one (which evaluates to undefined)."""
    tokens = tokenize(text)
    p = _Parser(text, tokens)
    if p.tok.kind == "EOF":
        return None
    node = p.expr()
    if p.tok.kind != "EOF":
        raise p.unexpected("an operator or end of condition")
    return node


def parse_route(text: str) -> ParsedRoute:
    tokens = tokenize(text)
    return _Parser(text, tokens).route()
