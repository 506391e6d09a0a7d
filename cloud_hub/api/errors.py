"""The REST API's error answers: one mapping from an error to (status, JSON body, headers),
used by the app's exception handlers and by the twin handler, which answers outside FastAPI's
routing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DataError

from cloud_hub.errors import HubError, IotHubUnauthorized

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """A JSON answer: status, body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] | None = None


class BodyInvalid(Exception):
    """A request body FastAPI's ``dict`` body parameter would refuse (same path and message)."""

    def __init__(self, path: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.status = status


def invalid_request(errors: Sequence[tuple[str, str]], status: int = 400) -> Reply:
    """The answer to invalid input: ``errors`` are (path, message), the first one leads."""
    path, message = errors[0] if errors else ("", "invalid request")
    body = {
        "errorCode": "ArgumentInvalid",
        "message": f"{path}: {message}",
        "path": path,
        "errors": [{"path": where, "message": what} for where, what in errors],
    }
    return Reply(status, body)


def error_reply(exc: HubError | BodyInvalid | DataError) -> Reply:
    if isinstance(exc, HubError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if isinstance(exc, IotHubUnauthorized):
            headers = {"iothub-errorcode": exc.code}
        return Reply(exc.status, exc.to_json(), headers)
    if isinstance(exc, BodyInvalid):
        return invalid_request([(exc.path, exc.message)], exc.status)
    # e.g. a NUL character in an id (PostgreSQL text cannot hold one)
    log.info("rejected by the database: %s", exc.orig)
    return Reply(
        400, {"errorCode": "ArgumentInvalid", "message": "a value in the request is not storable"}
    )


ANSWERED = (HubError, BodyInvalid, DataError)
"""The errors ``error_reply`` answers; any other is a server error."""
