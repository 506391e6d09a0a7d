"""The edge hub's small HTTP APIs (stdlib ``http.server``), thin adapters over pure handlers: the
workload API on a unix socket (``workload.handle``) and the gateway's HTTPS listener for
module-to-module direct methods (``module_methods.handle``)."""

from __future__ import annotations

import logging
import os
import socketserver
import ssl
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge_agent.edgehub import workload
from edge_agent.edgehub.answer import Answer, error
from edge_agent.edgehub.credentials import ModuleIdentity

log = logging.getLogger("edgefleet.edgehub.http")

MAX_BODY = 64 * 1024
MAX_SOCKET_PATH = 107  # sun_path, less the terminating NUL

# (method, path with query, headers with lower-case names, body) -> answer
Responder = Callable[[str, str, Mapping[str, str], bytes], Answer]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self) -> str:
        return "edge-hub-client"  # unix sockets have no peer address

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("edge hub HTTP: " + format, *args)

    def _answer(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            answer = error(400, "Content-Length: missing or too large")
        else:
            body = self.rfile.read(length) if length else b""
            respond: Responder = getattr(self.server, "respond")  # noqa: B009 - set below
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = respond(method, self.path, headers, body)
        data = answer.encoded()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._answer("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._answer("DELETE")


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _Serving:
    """A server running in its own thread."""

    def __init__(self) -> None:
        self._server: socketserver.BaseServer | None = None

    def _run(self, server: socketserver.BaseServer, respond: Responder, name: str) -> None:
        server.respond = respond  # type: ignore[attr-defined]
        self._server = server
        threading.Thread(target=server.serve_forever, name=name, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class WorkloadServer(_Serving):
    """Serve module ``module_id``'s workload API on ``socket_path`` (a stale one is replaced):
    requests on it are that module's."""

    def __init__(
        self,
        socket_path: Path,
        module_id: str,
        trust_bundle: Callable[[], str],
        identity_of: Callable[[str], ModuleIdentity | None],
    ) -> None:
        super().__init__()
        if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
            raise ValueError(f"workload socket path too long for a unix socket: {socket_path}")
        self.socket_path = socket_path
        self.module_id = module_id
        self._trust_bundle = trust_bundle
        self._identity_of = identity_of

    @property
    def uri(self) -> str:
        return f"unix://{self.socket_path}"

    def _respond(self, method: str, target: str, _h: Mapping[str, str], body: bytes) -> Answer:
        return workload.handle(
            method, target, body, self._trust_bundle(), self._identity_of, self.module_id
        )

    def start(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        server = _UnixServer(str(self.socket_path), _Handler)
        os.chmod(self.socket_path, 0o660)
        self._run(server, self._respond, f"workload-{self.module_id}")

    def stop(self) -> None:
        running = self._server is not None
        super().stop()
        if running:
            self.socket_path.unlink(missing_ok=True)


class HttpsServer(_Serving):
    """Serve ``respond`` over HTTPS on ``host:port`` (0: a free port)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, respond: Responder) -> None:
        super().__init__()
        self.host, self.port = host, port
        self._context = context
        self._respond = respond

    def start(self) -> int:
        server = ThreadingHTTPServer((self.host, self.port), _Handler)
        server.daemon_threads = True
        # the handshake runs in the request thread, so a stalled client blocks no one else
        server.socket = self._context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port = server.server_address[1]
        self._run(server, self._respond, "gateway-https")
        return self.port
