"""Byte relays between a device's connection and the hub's connection to the broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

CHUNK = 256 * 1024


async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until end of stream (or an error of either side)."""
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()


async def first_to_end(*flows: Awaitable[None]) -> None:
    """Run the flows until one of them ends (or fails); cancel the others."""
    tasks = [asyncio.ensure_future(flow) for flow in flows]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a stream without waiting long for a peer that does not answer."""
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2)
