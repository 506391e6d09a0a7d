"""The error both SDK clients raise."""

from __future__ import annotations


class ClientError(RuntimeError):
    """A request the hub answered with an error status, or a client that cannot connect."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MessageRefusedError(ClientError):
    """The edge hub acknowledged a message without storing it (``status`` 507: its disk is full;
    503: its store failed); ``message_ids`` names the refused messages. Retrying later with the
    same message id is safe."""

    def __init__(self, message: str, status: int, message_ids: list[str]) -> None:
        super().__init__(message, status)
        self.message_ids = message_ids
