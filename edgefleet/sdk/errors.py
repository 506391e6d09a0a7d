"""The error both SDK clients raise."""

from __future__ import annotations


class ClientError(RuntimeError):
    """A request the hub answered with an error status, or a client that cannot connect."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
