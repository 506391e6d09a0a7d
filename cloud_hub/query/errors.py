"""The one error type of the query package."""


class QueryError(ValueError):
    """A query or condition that cannot be parsed (or compiled).

    ``str(err)`` reads like ``line 1, column 23 (offset 22): expected ']' but found 'AND'``; the
    parts are also attributes so an API can return them as fields.
    """

    def __init__(self, message: str, text: str = "", offset: int = 0) -> None:
        self.reason = message
        self.offset = offset
        self.line = text.count("\n", 0, offset) + 1
        self.column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        super().__init__(f"line {self.line}, column {self.column} (offset {offset}): {message}")
