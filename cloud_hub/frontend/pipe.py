"""Byte relays between a device's connection and the hub's connection to the broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any


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
    if isinstance(writer.transport.get_protocol(), Forward):  # spliced: no stream to wait on
        writer.transport.close()
        return
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2)


class Forward(asyncio.Protocol):
    """Hands whatever arrives on its transport straight to ``peer`` (no coroutine per chunk),
    pausing reads while the peer's write buffer is full; ``done`` resolves when its transport
    is lost."""

    def __init__(self, done: asyncio.Future[None], peer: Any) -> None:
        self.done = done
        self.peer = peer
        """The other side's transport (uvloop's transports are not asyncio's classes)."""
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.peer.write(data)

    def eof_received(self) -> bool:
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def pause_writing(self) -> None:  # our transport's buffer is full: stop reading the peer
        self.peer.pause_reading()

    def resume_writing(self) -> None:
        self.peer.resume_reading()


async def splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    first: bytes,
    connect: Any,
) -> None:
    """Relay a stream's connection to a new one (``connect(protocol_factory)``, e.g. a bound
    ``loop.create_connection``) byte for byte, ``first`` ahead of what the stream has not yet
    read, until either side closes."""
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[None] = loop.create_future()
    device = writer.transport
    upstream, _proto = await connect(lambda: Forward(lost, device))
    # what the stream reader read ahead of the CONNECT (a client that did not wait for CONNACK)
    pending = bytes(getattr(reader, "_buffer", b""))
    upstream.write(first + pending)
    device.set_protocol(Forward(lost, upstream))
    device.resume_reading()  # type: ignore[attr-defined]  # a read-write transport
    try:
        await lost
    finally:
        upstream.close()
