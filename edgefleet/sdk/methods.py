"""Direct methods as both SDK clients serve them: a request, the user's handler, a response.

A handler returns a ``MethodResponse`` (or ``None`` when it answers later itself through
``send_method_response``). No handler answers 501; a handler that raises answers 500 with the
exception's text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgefleet import protocol as p


@dataclass
class MethodRequest:
    request_id: str
    name: str
    payload: Any
    module_id: str | None = None


@dataclass
class MethodResponse:
    request_id: str
    status: int
    payload: Any = None
    module_id: str | None = None

    @classmethod
    def create_from_method_request(
        cls, request: MethodRequest, status: int, payload: Any = None
    ) -> MethodResponse:
        return cls(request.request_id, status, payload, request.module_id)


MethodHandler = Callable[[MethodRequest], "MethodResponse | None"]


def decode_request(rid: str, name: str, payload: bytes, module_id: str | None) -> MethodRequest:
    """The request for a received payload: JSON when it parses, else its text (empty: None)."""
    try:
        body = json.loads(payload) if payload else None
    except ValueError:
        body = payload.decode(errors="replace")
    return MethodRequest(rid, name, body, module_id)


def answer(
    handler: MethodHandler | None, request: MethodRequest, log: logging.Logger
) -> MethodResponse | None:
    """Run ``handler`` on ``request``; the response to send, or None when the handler sends it."""
    if handler is None:
        return MethodResponse.create_from_method_request(
            request, 501, {"message": f"method {request.name!r} not implemented"}
        )
    try:
        return handler(request)
    except Exception as exc:
        log.exception("method handler failed")
        return MethodResponse.create_from_method_request(request, 500, {"message": str(exc)})


def encode_response(
    device_id: str, module_id: str | None, response: MethodResponse
) -> tuple[str, bytes]:
    """Topic and body of a method response sent as ``module_id`` (None: the device)."""
    topic = p.method_response_topic(device_id, response.status, response.request_id, module_id)
    return topic, json.dumps(response.payload).encode()
