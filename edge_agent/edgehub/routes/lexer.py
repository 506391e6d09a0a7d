"""Hand-written lexer with the token rules of IoT Edge's route grammar.

Like the ANTLR lexer it mirrors, every rule is tried at each position, the longest match wins and
ties go to the rule listed first. That is what makes ``a-b`` one identifier and ``-2`` a number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge_agent.edgehub.routes.errors import RouteError

_ESC = r"\\(?:[\"'\\]|u[0-9a-fA-F]{4})"
_ID_EXCLUDED = r"()<>@,;:\\\"/\[\]?={} \t\n\r"
_QP_EXCLUDED = r"()<>@,;:\\\"/?={} \t\n\r"

# (kind, pattern) in priority order: on equal length the earlier rule wins.
_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("LBRACE", re.compile(r"\{")),
    ("RBRACE", re.compile(r"\}")),
    ("SELECT", re.compile(r"(?i:select)")),
    ("FROM", re.compile(r"(?i:from)")),
    ("WHERE", re.compile(r"(?i:where)")),
    ("INTO", re.compile(r"(?i:into)")),
    ("STRING", re.compile(rf"\"(?:{_ESC}|[^\"\\])*\"|'(?:{_ESC}|[^'\\])*'")),
    ("UNTERMINATED_STRING", re.compile(rf"\"(?:{_ESC}|[^\"\\])*|'(?:{_ESC}|[^'\\])*")),
    ("INTEGER", re.compile(r"-?[0-9]+")),
    ("HEX", re.compile(r"0[xX][0-9a-fA-F]+")),
    ("REAL", re.compile(r"-?[0-9]*\.[0-9]+(?:[eE][+-]?[0-9]+)?")),
    ("REAL", re.compile(r"-?[0-9]*[eE][+-]?[0-9]+")),
    ("TRUE", re.compile(r"true")),
    ("FALSE", re.compile(r"false")),
    ("NULL", re.compile(r"null")),
    ("UNDEFINED", re.compile(r"undefined")),
    ("LPAREN", re.compile(r"\(")),
    ("RPAREN", re.compile(r"\)")),
    ("COMMA", re.compile(r",")),
    ("PLUS", re.compile(r"\+")),
    ("MINUS", re.compile(r"-")),
    ("MUL", re.compile(r"\*")),
    ("DIV", re.compile(r"/")),
    ("MOD", re.compile(r"%")),
    ("AND", re.compile(r"(?i:and)")),
    ("OR", re.compile(r"(?i:or)")),
    ("NOT", re.compile(r"(?i:not)")),
    ("EQ", re.compile(r"=")),
    ("NE", re.compile(r"!=|<>")),
    ("LE", re.compile(r"<=")),
    ("GE", re.compile(r">=")),
    ("GT", re.compile(r">")),
    ("LT", re.compile(r"<")),
    ("CONCAT", re.compile(r"\|\|")),
    ("COALESCE", re.compile(r"\?\?")),
    ("SYS_PROP", re.compile(rf"\$[^{_QP_EXCLUDED}]+")),
    ("ID", re.compile(rf"[^{_ID_EXCLUDED}]+")),
    ("QUERY_PATH", re.compile(rf"[^{_QP_EXCLUDED}]+")),
    ("WS", re.compile(r"[ \t\r\n]+")),
    ("COMMENT", re.compile(r"/\*.*?\*/", re.DOTALL)),
]


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.text)


# Characters that only a one-character rule matches (every longer rule excludes them), so the
# other rules need not be tried there: deeply nested input stays cheap.
_ONLY_RULE = {"(": "LPAREN", ")": "RPAREN", "{": "LBRACE", "}": "RBRACE", ",": "COMMA"}


def tokenize(text: str) -> list[Token]:
    """Tokens of ``text`` without whitespace and comments, ending with an ``EOF`` token."""
    tokens: list[Token] = []
    pos = 0
    n = len(text)
    while pos < n:
        only = _ONLY_RULE.get(text[pos])
        if only is not None:
            tokens.append(Token(only, text[pos], pos))
            pos += 1
            continue
        best_kind = "UNKNOWN_CHAR"
        best_len = 0
        for kind, pattern in _RULES:
            m = pattern.match(text, pos)
            if m is not None and m.end() - pos > best_len:
                best_kind, best_len = kind, m.end() - pos
        if best_len == 0:
            best_kind, best_len = "UNKNOWN_CHAR", 1
        if best_kind not in ("WS", "COMMENT"):
            tokens.append(Token(best_kind, text[pos : pos + best_len], pos))
        pos += best_len
    tokens.append(Token("EOF", "", n))
    return tokens


def check_tokens(text: str, tokens: list[Token]) -> None:
    """Raise for the lexical errors (unknown characters, unterminated strings) in order."""
    for tok in tokens:
        if tok.kind == "UNKNOWN_CHAR":
            raise RouteError(f"Syntax error: invalid symbol '{tok.text}'", text, tok.start)
        if tok.kind == "UNTERMINATED_STRING":
            raise RouteError("Syntax error: unterminated string", text, tok.start, len(tok.text))


def unescape(body: str) -> str:
    """Decode a string literal's contents: ``\\uXXXX`` first, then ``\\"``, ``\\'`` and ``\\\\``."""
    step1 = re.sub(r"\\[Uu]([0-9A-Fa-f]{4})", lambda m: chr(int(m.group(1), 16)), body)
    return re.sub(r"\\([\"'\\])", lambda m: m.group(1), step1)
