"""A TCP relay that delays what it forwards (``python -m composition.chaos.relay``), run inside a
device's namespace between the device and the hub: every chunk read is held for ``delay`` plus a
random ``jitter`` before it is written on. Bytes of one connection keep their order (TCP gives
nothing else to reorder); chunks of different connections overtake each other."""

from __future__ import annotations

import argparse
import asyncio
import random
import time


def release_time(
    now: float, previous: float, delay: float, jitter: float, rng: random.Random
) -> float:
    """When a chunk read at ``now`` goes out: its own delay, never before the previous chunk."""
    return max(previous, now + delay + rng.uniform(0.0, jitter))


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, jitter: float
) -> None:
    rng = random.Random()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    last = 0.0
    try:
        while True:
            data = await reader.read(65536)
            last = release_time(time.monotonic(), last, delay, jitter, rng)
            await queue.put((last, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
        writer.close()


async def serve(
    listen: tuple[str, int], target: tuple[str, int], delay: float, jitter: float
) -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*target)
        except OSError:
            w.close()
            return
        await asyncio.gather(_pump(r, uw, delay, jitter), _pump(ur, w, delay, jitter))

    server = await asyncio.start_server(handle, *listen)
    async with server:
        await server.serve_forever()


def _addr(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=_addr, required=True)
    parser.add_argument("--target", type=_addr, required=True)
    parser.add_argument("--delay-ms", type=float, default=10.0)
    parser.add_argument("--jitter-ms", type=float, default=40.0)
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.target, args.delay_ms / 1000, args.jitter_ms / 1000))


if __name__ == "__main__":
    main()
