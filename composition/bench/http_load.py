"""A light HTTP/1.1 load generator for the hub benches.

The bench's clients share the machine with the hub, so every millisecond of client CPU is one
the hub does not get. Here each client is a keep-alive connection on one asyncio loop (uvloop
where installed) that writes a request as bytes built by string formatting and reads the answer
by its ``Content-Length``: about a fifth of what ``http.client`` in a thread costs per request.
It speaks only what the hub answers (no chunked bodies, no redirects).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# (method, path, body or None) of one operation; the argument is the client's sequence number
Operation = tuple[str, str, bytes | None]


@dataclass
class LoadResult:
    done: int
    seconds: float
    errors: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return round(self.done / self.seconds, 1) if self.seconds else 0.0


def _request(host: str, token: str, method: str, path: str, body: bytes | None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
    if body is None:
        return (head + "\r\n").encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            break
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _client(
    host: str,
    port: int,
    token: str,
    count: int,
    operation: Callable[[random.Random, int], Operation],
    rng: random.Random,
    errors: list[str],
) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    done = 0
    try:
        for i in range(count):
            writer.write(_request(host, token, *operation(rng, i)))
            status, body = await _read_response(reader)
            if status != 200:
                errors.append(f"{status} {body[:200]!r}")
                break
            done += 1
    finally:
        writer.close()
    return done


async def _run(
    url: str,
    token: str,
    clients: int,
    per_client: int,
    operation: Callable[[random.Random, int], Operation],
) -> LoadResult:
    parsed = urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    errors: list[str] = []
    start = time.perf_counter()
    counts = await asyncio.gather(
        *(
            _client(host, port, token, per_client, operation, random.Random(10 + i), errors)
            for i in range(clients)
        )
    )
    return LoadResult(sum(counts), time.perf_counter() - start, errors)


def run_load(
    url: str,
    token: str,
    clients: int,
    count: int,
    operation: Callable[[random.Random, int], Operation],
) -> LoadResult:
    """``count`` operations (rounded down to a multiple of ``clients``) over ``clients``
    keep-alive connections, each waiting for its answer before the next request."""
    try:
        import uvloop

        runner: Callable[..., LoadResult] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run
    return runner(_run(url, token, clients, count // clients, operation))


def twin_patch(ids: list[str]) -> Callable[[random.Random, int], Operation]:
    """A desired-properties patch of a random device's twin."""

    def operation(rng: random.Random, i: int) -> Operation:
        body = {"properties": {"desired": {"bench": {"seq": i, "fps": i % 30}}}}
        return "PATCH", f"/twins/{rng.choice(ids)}", json.dumps(body).encode()

    return operation


def twin_read(ids: list[str]) -> Callable[[random.Random, int], Operation]:
    """A read of a random device's twin."""

    def operation(rng: random.Random, _i: int) -> Operation:
        return "GET", f"/twins/{rng.choice(ids)}", None

    return operation
