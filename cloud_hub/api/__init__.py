"""REST routers of the hub; each module has ``install(app, hub)`` (see cloud_hub.app)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool

T = TypeVar("T")


async def call_service(fn: Callable[..., T], *args: Any) -> T:
    """Run a (blocking, database-bound) service call off the event loop: one thread hop."""
    return await run_in_threadpool(fn, *args)
