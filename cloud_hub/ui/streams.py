"""Server-Sent Events for the dashboard. A stream subscribes to the hub's event bus only while a
browser holds it open, so a hub nobody watches does no dashboard work. Streams end after
``MAX_STREAM_SECONDS`` (EventSource reconnects by itself), and at once when the hub begins to
stop (``UiState.stopping``), so a hub never waits on an open dashboard to stop."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from starlette.responses import StreamingResponse

from cloud_hub.api import call_service
from cloud_hub.hub import Hub
from cloud_hub.mqtt.stored_messages import list_messages

HEARTBEAT_SECONDS = 15.0
#: how often a quiet stream looks whether the hub is stopping
WAKE_SECONDS = 1.0
MAX_STREAM_SECONDS = 300.0
#: at most one "something changed" event per this many seconds and stream
COALESCE_SECONDS = 1.0
LIVE_POLL_SECONDS = 1.0


def sse(event: str, data: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n".encode()


def sse_response(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def change_events(
    request: Request,
    hub: Hub,
    stopping: threading.Event,
    types: tuple[type, ...],
    wanted: Callable[[Any], bool],
    event_name: str,
) -> AsyncIterator[bytes]:
    """``event_name`` whenever a wanted bus event happened (coalesced), heartbeats between;
    ends when ``stopping`` is set (the hub is stopping)."""
    loop = asyncio.get_running_loop()
    queue, unsubscribe = hub.events.async_queue(loop, *types, remote=True)
    started = last_sent = time.monotonic()
    try:
        yield b": connected\n\n"
        while not stopping.is_set() and time.monotonic() - started < MAX_STREAM_SECONDS:
            try:
                event = await asyncio.wait_for(queue.get(), WAKE_SECONDS)
            except TimeoutError:
                if time.monotonic() - last_sent >= HEARTBEAT_SECONDS:
                    if await request.is_disconnected():
                        return
                    last_sent = time.monotonic()
                    yield b": heartbeat\n\n"
                continue
            if not wanted(event):
                continue
            await asyncio.sleep(COALESCE_SECONDS)  # let a burst of changes arrive
            while not queue.empty():
                queue.get_nowait()
            last_sent = time.monotonic()
            yield sse(event_name, str(time.time()))
    finally:
        unsubscribe()


async def message_events(
    request: Request, hub: Hub, stopping: threading.Event, device_id: str, since: str | None
) -> AsyncIterator[bytes]:
    """A device's stored messages after ``since`` as ``message`` events (JSON), polled while
    the stream is open; ends when ``stopping`` is set."""
    started = time.monotonic()
    cursor = since
    idle = 0.0
    while not stopping.is_set() and time.monotonic() - started < MAX_STREAM_SECONDS:
        page = await call_service(list_messages, hub, device_id, cursor, 200)
        for message in page["messages"]:
            yield sse("message", json.dumps(message))
        cursor = page["next"]
        if page["messages"]:
            idle = 0.0
            continue
        if await request.is_disconnected():
            return
        idle += LIVE_POLL_SECONDS
        if idle >= HEARTBEAT_SECONDS:
            idle = 0.0
            yield b": heartbeat\n\n"
        await asyncio.sleep(LIVE_POLL_SECONDS)
