"""The one error type of the route language: every syntax and type error carries its position."""

from __future__ import annotations


class RouteError(ValueError):
    """A route or condition that does not compile; ``line``/``column`` are 1-based."""

    def __init__(self, message: str, text: str, offset: int, length: int = 1) -> None:
        self.message = message
        self.offset = max(0, min(offset, len(text)))
        self.length = max(1, length)
        before = text[: self.offset]
        self.line = before.count("\n") + 1
        self.column = self.offset - (before.rfind("\n") + 1) + 1
        super().__init__(f"line {self.line}, column {self.column}: {message}")

    def to_dict(self) -> dict[str, object]:
        return {
            "error": self.message,
            "line": self.line,
            "column": self.column,
            "offset": self.offset,
            "length": self.length,
        }
