"""Serve the hub's app on its listeners: plain HTTP and, with ``--tls-port``, HTTPS.

Each listener is a uvicorn server in one event loop, over the same app. The first (HTTP) runs the
app's lifespan; the others start once it has started, so no request reaches a hub whose services
are not up. SIGTERM or Ctrl-C stops the others first and the first last, so its lifespan stops
the services after every listener has drained.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("uvicorn.error")  # configured by uvicorn, as its own messages


OWN_LOGGERS = ("cloud_hub", "edgefleet")


def configure_logging(level: str) -> None:
    """The hub's own loggers at ``level``, beside uvicorn's; the libraries under them (amqtt
    logs every connection at INFO) at WARNING unless ``level`` is debug."""
    level = level.upper()
    root = "DEBUG" if level == "DEBUG" else "WARNING"
    logging.basicConfig(level=root, format="%(levelname)s:     %(name)s: %(message)s")
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)


class ListenError(Exception):
    """A listener cannot start: its address is taken or its certificate is unusable."""


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    certfile: Path | None = None
    keyfile: Path | None = None


def bind(listener: Listener) -> socket.socket:
    """The listening socket (ListenError when the address is taken or not ours)."""
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    try:
        return socket.create_server((listener.host, listener.port), family=family, backlog=2048)
    except OSError as exc:
        where = f"{listener.host}:{listener.port}"
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(f"cannot listen on {where}: {reason}") from None


def bind_all(listeners: Sequence[Listener]) -> list[socket.socket]:
    """Every listener's socket, or ListenError (and none left open)."""
    sockets: list[socket.socket] = []
    try:
        for listener in listeners:
            sockets.append(bind(listener))
    except ListenError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Server(uvicorn.Server):
    """A server whose signals go to its group (uvicorn would stop just itself and re-raise the
    signal after a graceful stop; the group exits 0 instead)."""

    def __init__(self, config: uvicorn.Config, group: _Group) -> None:
        super().__init__(config)
        self.group = group

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.group.stop(sig)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if not self.config.is_ssl:
            await super().shutdown(sockets)
            return
        reaper = asyncio.create_task(self._abort_closing())
        try:
            await super().shutdown(sockets)
        finally:
            reaper.cancel()

    async def _abort_closing(self) -> None:
        """A closed TLS connection waits for the client's close_notify, which a client keeping
        the connection idle in its pool (requests does) never sends: end those at once, as
        plain HTTP connections end, instead of holding the shutdown to its timeout."""
        while True:
            await asyncio.sleep(0.05)
            for connection in list(self.server_state.connections):
                transport = getattr(connection, "transport", None)
                if transport is not None and transport.is_closing():
                    transport.abort()


class _Group:
    def __init__(self, on_stop: Sequence[Callable[[], None]] = ()) -> None:
        self.servers: list[_Server] = []
        self.stopping = False
        self.on_stop = list(on_stop)

    def announce(self, sockets: list[socket.socket]) -> None:
        for server, sock in zip(self.servers, sockets, strict=True):
            scheme = "https" if server.config.is_ssl else "http"
            log.info("hub API on %s://%s:%d", scheme, server.config.host, sock.getsockname()[1])

    def stop(self, sig: int) -> None:
        """Stop the secondary servers now; ``run`` stops the primary after them. A second
        Ctrl-C forces the exit."""
        force = self.stopping and sig == signal.SIGINT
        if not self.stopping:
            for hook in self.on_stop:
                hook()
        self.stopping = True
        for server in self.servers[1:]:
            server.should_exit = True
            server.force_exit = server.force_exit or force
        if force or len(self.servers) == 1:
            self.servers[0].should_exit = True
            self.servers[0].force_exit = force

    async def run(self, sockets: list[socket.socket]) -> None:
        primary, others = self.servers[0], self.servers[1:]
        main = asyncio.create_task(primary.serve([sockets[0]]))
        while not (primary.started or main.done()):
            await asyncio.sleep(0.02)
        if primary.started:
            self.announce(sockets)
        if not primary.started or not others:
            await main
            return
        pairs = zip(others, sockets[1:], strict=True)
        secondaries = asyncio.gather(*(s.serve([k]) for s, k in pairs), return_exceptions=True)
        # The secondaries end on a signal; should the primary end first, they follow it.
        either: list[asyncio.Future[Any]] = [main, secondaries]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        for server in others:
            server.should_exit = True
        for result in await secondaries:
            if isinstance(result, BaseException):
                log.error("an HTTPS listener failed: %s", result)
        primary.should_exit = True
        await main


def serve(
    app: Any,
    listeners: list[Listener],
    on_stop: Sequence[Callable[[], None]] = (),
    sockets: list[socket.socket] | None = None,
    **config: Any,
) -> bool:
    """Serve ``app`` on ``listeners`` (the first runs the lifespan) until a signal; ``config``
    are uvicorn.Config options; ``on_stop`` run when the stop begins, before open requests
    drain. Loads the certificates and binds every socket before serving (ListenError), unless
    ``sockets`` (one per listener, already listening) are given. True when it started."""
    group = _Group(on_stop)
    for index, listener in enumerate(listeners):
        server_config = uvicorn.Config(
            app,
            host=listener.host,
            port=listener.port,
            lifespan="on" if index == 0 else "off",
            ssl_certfile=listener.certfile,
            ssl_keyfile=listener.keyfile,
            **config,
        )
        try:
            server_config.load()  # reads the certificate and key now
        except (OSError, ssl.SSLError) as exc:
            raise ListenError(f"cannot load the HTTPS certificate or key: {exc}") from None
        group.servers.append(_Server(server_config, group))
    if sockets is None:
        sockets = bind_all(listeners)
    loop_factory = group.servers[0].config.get_loop_factory()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(group.run(sockets))
    return group.servers[0].started
