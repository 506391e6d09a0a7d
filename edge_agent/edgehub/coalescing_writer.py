"""One socket write per connection per event-loop turn.

Every packet the local broker writes (PUBACKs of a group commit, deliveries, SUBACKs) goes into a
per-connection buffer that is sent at the start of the next loop turn, so a burst of packets to
one client costs one ``send`` instead of one each; the order of packets is kept.
"""

from __future__ import annotations

import asyncio


class CoalescingWriter:
    """Wraps a ``StreamWriter``: ``write`` buffers, the loop sends the buffer soon after."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._chunks: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._chunks:
            self._loop.call_soon(self.flush)
        self._chunks.append(data)

    def flush(self) -> None:
        """Send what is buffered now (nothing once the connection is closing)."""
        if not self._chunks:
            return
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks = []
        if not self._writer.is_closing():
            self._writer.write(data)

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    def close(self) -> None:
        """Send what is buffered, then close."""
        self.flush()
        self._writer.close()

    def pending_bytes(self) -> int:
        """Bytes buffered here and in the transport, not yet sent."""
        return sum(map(len, self._chunks)) + self._writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        self.flush()
        await self._writer.drain()
