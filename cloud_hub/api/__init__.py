"""REST routers of the hub; each module has ``install(app, hub)`` (see cloud_hub.app)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

T = TypeVar("T")

try:
    import orjson

    def _dumps(data: Any) -> bytes:
        try:
            return orjson.dumps(data)
        except TypeError:  # e.g. an integer beyond 64 bits, which json keeps
            return json.dumps(data, separators=(",", ":")).encode()

except ImportError:  # pragma: no cover - orjson ships with the hub extra

    def _dumps(data: Any) -> bytes:
        return json.dumps(data, separators=(",", ":")).encode()


async def call_service(fn: Callable[..., T], *args: Any) -> T:
    """Run a (blocking, database-bound) service call off the event loop: one thread hop."""
    return await run_in_threadpool(fn, *args)


def json_response(data: Any, status_code: int = 200) -> Response:
    """A JSON response of plain JSON data, encoded once (no response-model validation pass).

    For hot routes whose service already returns JSON-ready dicts; declare the documented shape
    with ``response_model`` on the route.
    """
    return Response(_dumps(data), status_code=status_code, media_type="application/json")
