"""The workload API served over HTTP/1.1 on a unix socket (stdlib ``http.server``), a thin
adapter over ``workload.handle``."""

from __future__ import annotations

import logging
import os
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from edge_agent.edgehub import workload
from edge_agent.edgehub.credentials import ModuleIdentity

log = logging.getLogger("edgefleet.edgehub.workload")

MAX_BODY = 64 * 1024
MAX_SOCKET_PATH = 107  # sun_path, less the terminating NUL


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    trust_bundle: Callable[[], str]
    identity_of: Callable[[str], ModuleIdentity | None]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def address_string(self) -> str:
        return "workload-client"  # unix sockets have no peer address

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("workload API: " + format, *args)

    def _answer(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            answer = workload.Answer(400, {"message": "Content-Length: missing or too large"})
        else:
            body = self.rfile.read(length) if length else b""
            answer = workload.handle(
                method, self.path, body, self.server.trust_bundle(), self.server.identity_of
            )
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


class WorkloadServer:
    """Serve the workload API on ``socket_path`` (replaced if a stale one is there)."""

    def __init__(
        self,
        socket_path: Path,
        trust_bundle: Callable[[], str],
        identity_of: Callable[[str], ModuleIdentity | None],
    ) -> None:
        if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
            raise ValueError(f"workload socket path too long for a unix socket: {socket_path}")
        self.socket_path = socket_path
        self._trust_bundle = trust_bundle
        self._identity_of = identity_of
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        server = _Server(str(self.socket_path), _Handler)
        server.trust_bundle = self._trust_bundle
        server.identity_of = self._identity_of
        os.chmod(self.socket_path, 0o660)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="workload-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self.socket_path.unlink(missing_ok=True)
        self._server = None
