"""HTTP front end: Azure ML-style ``POST /score`` and the Open Inference Protocol (KServe v2).

``POST /score``: body = the image bytes (``image/jpeg``, ``image/png``) or JSON
``{"image": "<base64>"}``; answer = the module's ``results`` JSON (top-k classes).
``/v2/...``: see ``oip.py`` and docs/serving.md. Keys: ``Authorization: Bearer <key>`` on
``/score`` and on ``/v2`` model routes; health routes need none. Errors are JSON: ``{"message"}``
on ``/score`` (as before), ``{"error"}`` on ``/v2`` (as the protocol says).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from edgefleet import __version__
from modules.scoring import oip
from modules.scoring.core import (
    InvalidInput,
    Overloaded,
    ServingCore,
    ServingError,
    TooLarge,
    Unavailable,
)

HEADER_ALLOWANCE = 4 * 1024 * 1024  # JSON header / FP32 tensor room on top of the image cap
_MODEL_ROUTE = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")


class ScoringServer:
    def __init__(
        self, core: ServingCore, host: str, port: int, score_upstream: str | None = None
    ) -> None:
        self.core = core
        # an Azure ML entry script's server (azmlinfsrv): POST /score and GET /swagger.json go
        # there once the key is checked here; the built-in model still answers /v2 and gRPC
        self.upstream = Upstream(score_upstream) if score_upstream else None
        self.max_body = core.limits.max_image_bytes + HEADER_ALLOWANCE
        self.httpd = ThreadingHTTPServer((host, port), _handler_class(self))
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Upstream:
    """Forwards a request to a local HTTP server and hands back its status, type and body."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout

    def call(
        self, method: str, path: str, body: bytes | None, content_type: str
    ) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            headers = {"Content-Type": content_type} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            answer = conn.getresponse()
            return (
                answer.status,
                answer.getheader("Content-Type") or "application/json",
                answer.read(),
            )
        except OSError as exc:
            message = f"the entry script's server is not answering (yet): {exc}"
            return 503, "application/json", json.dumps({"message": message}).encode()
        finally:
            conn.close()


def _status_of(exc: ServingError) -> int:
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, Overloaded):
        return 429
    if isinstance(exc, Unavailable):
        return 503
    return 400


def _image_from(body: bytes, content_type: str) -> bytes:
    if content_type.startswith("application/json"):
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise InvalidInput(f"$: body is not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("image"), str):
            raise InvalidInput('$.image: expected JSON {"image": "<base64>"}')
        try:
            return base64.b64decode(doc["image"], validate=True)
        except binascii.Error as exc:
            raise InvalidInput(f"$.image: not base64: {exc}") from None
    return body


def _handler_class(server: ScoringServer) -> type[BaseHTTPRequestHandler]:
    core = server.core

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as tritonclient's connection pool expects

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass

        def _send_bytes(
            self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
        ) -> None:
            if self.command == "POST" and not getattr(self, "consumed", False):
                self.close_connection = True  # an unread body would be taken for a request
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _send(self, status: int, doc: Any) -> None:
            self._send_bytes(status, json.dumps(doc).encode(), "application/json")

        def _error(self, status: int, message: str, v2: bool) -> None:
            self._send(status, {"error": message} if v2 else {"message": message})

        def _authorized(self, v2: bool) -> bool:
            if core.keys.check_bearer(self.headers.get("Authorization")):
                return True
            self._error(401, "missing or wrong bearer key", v2)
            return False

        def _body(self, v2: bool) -> bytes | None:
            """The request body, or None after answering 400/413 (then the connection closes)."""
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length <= 0 or length > server.max_body:
                self.close_connection = True  # the unread body cannot be skipped safely
                if length > server.max_body:
                    self._error(
                        413,
                        f"body is {length} bytes; the limit is {server.max_body} bytes "
                        f"(images up to {core.limits.max_image_bytes} bytes)",
                        v2,
                    )
                else:
                    self._error(400, "a body with a Content-Length is required", v2)
                return None
            self.consumed = True
            return self.rfile.read(length)

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            path = self.path.split("?")[0].rstrip("/") or "/"
            if path in ("/", "/health"):
                self._send(200, {"status": "ok", "model": core.model.name})
            elif path == "/v2/health/live":
                self._send(200, {"live": True})
            elif path == "/v2/health/ready":
                ready = core.ready.is_set()
                self._send(200 if ready else 503, {"ready": ready})
            elif path == "/swagger.json" and server.upstream is not None:
                if self._authorized(False):
                    self._relay(server.upstream.call("GET", "/swagger.json", None, ""))
            elif path == "/v2":
                if self._authorized(True):
                    self._send(200, oip.server_metadata(__version__))
            else:
                route = self._model_route(path)
                if route is None:
                    return
                if route == "/infer":
                    self._error(405, f"use POST for {path}", True)
                elif route == "/ready":
                    self._send(200, {"name": core.model.name, "ready": core.ready.is_set()})
                else:
                    self._send(200, oip.model_metadata(core))

        def _model_route(self, path: str) -> str | None:
            """Checks model name, version and key of a /v2/models route; None once answered."""
            match = _MODEL_ROUTE.match(path)
            if match is None:
                self._error(404, f"no route {path}", path.startswith("/v2"))
                return None
            name, version, tail = match.groups()
            if name != core.model.name or version not in (None, oip.VERSION):
                self._error(404, f"model {name!r} version {version or oip.VERSION} not found", True)
                return None
            if not self._authorized(True):
                return None
            return tail or ""

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            path = self.path.split("?")[0]
            v2 = path.startswith("/v2/")
            # the body is read (up to the cap) before anything is answered, so that every
            # answer, a 401 too, leaves the connection usable for the client's next request
            body = self._body(v2)
            if body is None:
                return
            if path == "/score":
                self._score(body)
                return
            if not v2:
                self._error(404, f"no route {path}", False)
                return
            route = self._model_route(path)
            if route is None:
                return
            if route != "/infer":
                self._error(405, f"use GET for {path}", True)
                return
            self._infer(body)

        def _relay(self, answer: tuple[int, str, bytes]) -> None:
            status, content_type, payload = answer
            self._send_bytes(status, payload, content_type)

        def _score(self, body: bytes) -> None:
            if not self._authorized(False):
                return
            if server.upstream is not None:
                content_type = self.headers.get("Content-Type") or "application/json"
                self._relay(server.upstream.call("POST", "/score", body, content_type))
                return
            try:
                image = _image_from(body, self.headers.get("Content-Type") or "")
                result = core.score(image)
            except ServingError as exc:
                self._error(_status_of(exc), str(exc), False)
                return
            self._send(200, result)

        def _infer(self, body: bytes) -> None:
            header = self.headers.get("Inference-Header-Content-Length")
            try:
                try:
                    header_length = int(header) if header is not None else None
                except ValueError:
                    raise InvalidInput("Inference-Header-Content-Length is not a number") from None
                request = oip.parse_infer_request(body, header_length, list(core.outputs))
                if request.image is not None:
                    results = core.infer_image(request.image, request.outputs)
                else:
                    assert request.tensor is not None
                    results = core.infer_tensor(request.tensor, request.outputs)
            except ServingError as exc:
                self._error(_status_of(exc), str(exc), True)
                return
            payload, json_length = oip.encode_response(core.model.name, request, results)
            if json_length is None:
                self._send_bytes(200, payload, "application/json")
            else:
                self._send_bytes(
                    200,
                    payload,
                    "application/octet-stream",
                    {"Inference-Header-Content-Length": str(json_length)},
                )

    return Handler
