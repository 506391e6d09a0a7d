"""Tokenizer for the IoT Hub query language."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloud_hub.query.errors import QueryError

# Token kinds
NUMBER = "number"
STRING = "string"
IDENT = "identifier"
ESCAPED = "escaped name"  # [[configuration-id]]
OP = "operator"
EOF = "end of input"

_TWO_CHAR_OPS = ("!=", "<>", "<=", ">=")
_ONE_CHAR_OPS = "=<>+-*/%(),.[]"
_DIGITS = frozenset("0123456789")
_ESCAPES = {
    "'": "'",
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


@dataclass(frozen=True)
class Token:
    kind: str
    value: Any
    offset: int
    end: int

    def describe(self) -> str:
        if self.kind == EOF:
            return "end of input"
        if self.kind == STRING:
            return f"string {self.value!r}"
        if self.kind == ESCAPED:
            return f"'[[{self.value}]]'"
        return f"'{self.value}'"


def _is_ident_start(ch: str) -> bool:
    return ch.isalpha() or ch in "_$@#"


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$@#"


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        start = i
        if ch in "'\"":
            string, i = _read_string(text, i)
            tokens.append(Token(STRING, string, start, i))
        elif ch in _DIGITS or (ch == "." and i + 1 < n and text[i + 1] in _DIGITS):
            number, i = _read_number(text, i)
            tokens.append(Token(NUMBER, number, start, i))
        elif ch == "[" and text.startswith("[[", i):
            close = text.find("]]", i + 2)
            if close < 0:
                raise QueryError("unterminated '[[' escaped name: expected ']]'", text, i)
            name = text[i + 2 : close]
            if not name:
                raise QueryError("empty '[[]]' escaped name", text, i)
            i = close + 2
            tokens.append(Token(ESCAPED, name, start, i))
        elif _is_ident_start(ch):
            i += 1
            while i < n and _is_ident_char(text[i]):
                i += 1
            tokens.append(Token(IDENT, text[start:i], start, i))
        elif text.startswith(_TWO_CHAR_OPS, i):
            tokens.append(Token(OP, text[i : i + 2], start, i + 2))
            i += 2
        elif ch in _ONE_CHAR_OPS:
            tokens.append(Token(OP, ch, start, i + 1))
            i += 1
        else:
            raise QueryError(f"unexpected character {ch!r}", text, i)
    tokens.append(Token(EOF, None, n, n))
    return tokens


def _read_string(text: str, i: int) -> tuple[str, int]:
    quote = text[i]
    start = i
    i += 1
    out: list[str] = []
    n = len(text)
    while True:
        if i >= n:
            raise QueryError(f"unterminated string: expected closing {quote}", text, start)
        ch = text[i]
        if ch == quote:
            if i + 1 < n and text[i + 1] == quote:  # '' (or "") escapes the quote
                out.append(quote)
                i += 2
                continue
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= n:
                raise QueryError(f"unterminated string: expected closing {quote}", text, start)
            esc = text[i + 1]
            if esc == "u":
                digits = text[i + 2 : i + 6]
                if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                    raise QueryError("invalid \\u escape: expected 4 hex digits", text, i)
                out.append(chr(int(digits, 16)))
                i += 6
                continue
            if esc not in _ESCAPES:
                raise QueryError(
                    f"invalid escape '\\{esc}' in string (allowed: \\' \\\" \\\\ \\uXXXX)", text, i
                )
            out.append(_ESCAPES[esc])
            i += 2
            continue
        out.append(ch)
        i += 1


def _read_number(text: str, i: int) -> tuple[int | float, int]:
    start = i
    n = len(text)
    if text.startswith(("0x", "0X"), i):
        i += 2
        while i < n and text[i] in "0123456789abcdefABCDEF":
            i += 1
        if i == start + 2:
            raise QueryError(
                "invalid hexadecimal number: expected hex digits after 0x", text, start
            )
        if i < n and _is_ident_char(text[i]):
            raise QueryError("invalid hexadecimal number", text, start)
        return int(text[start + 2 : i], 16), i
    while i < n and text[i] in _DIGITS:
        i += 1
    is_float = False
    if i < n and text[i] == "." and (i + 1 >= n or not _is_ident_start(text[i + 1])):
        is_float = True
        i += 1
        while i < n and text[i] in _DIGITS:
            i += 1
    if i < n and text[i] in "eE":
        j = i + 1
        if j < n and text[j] in "+-":
            j += 1
        if j < n and text[j] in _DIGITS:
            is_float = True
            i = j
            while i < n and text[i] in _DIGITS:
                i += 1
    if i < n and _is_ident_char(text[i]):
        raise QueryError(f"invalid number {text[start : i + 1]!r}", text, start)
    literal = text[start:i]
    if not is_float:
        try:
            return int(literal), i
        except ValueError:  # more digits than Python converts
            raise QueryError("number too long", text, start) from None
    value = float(literal)
    if value != value or value in (float("inf"), float("-inf")):
        raise QueryError(f"number out of range {literal!r}", text, start)
    return value, i
