"""Azure ML-style scoring endpoint: ``POST /score`` with ``Authorization: Bearer <key>``.

Body: the image bytes (``Content-Type: image/jpeg`` or ``image/png``) or JSON
``{"image": "<base64>"}``. Answer: the same JSON as the module's ``results`` messages.
Keys: env ``SCORING_PRIMARY_KEY`` / ``SCORING_SECONDARY_KEY``; with neither set, no key is needed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from modules.scoring.scorer import Scorer

MAX_BODY = 16 * 1024 * 1024


class ScoringServer:
    def __init__(self, scorer: Scorer, host: str, port: int, keys: list[str]) -> None:
        self.scorer = scorer
        self.keys = [k for k in keys if k]
        handler = _handler_class(self)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def authorized(self, header: str | None) -> bool:
        if not self.keys:
            return True
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return any(hmac.compare_digest(token.strip().encode(), k.encode()) for k in self.keys)


def _image_from(body: bytes, content_type: str) -> bytes:
    if content_type.startswith("application/json"):
        doc = json.loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("image"), str):
            raise ValueError('expected JSON {"image": "<base64>"}')
        try:
            return base64.b64decode(doc["image"], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"image is not base64: {exc}") from None
    return body


def _handler_class(server: ScoringServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass

        def _send(self, status: int, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if self.path.split("?")[0] in ("/", "/health"):
                self._send(200, {"status": "ok", "model": server.scorer.config.model})
            else:
                self._send(404, {"message": "not found"})

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            if self.path.split("?")[0] != "/score":
                self._send(404, {"message": "not found"})
                return
            if not server.authorized(self.headers.get("Authorization")):
                self._send(401, {"message": "missing or wrong bearer key"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY:
                self._send(400, {"message": f"body must be 1..{MAX_BODY} bytes"})
                return
            body = self.rfile.read(length)
            try:
                image = _image_from(body, self.headers.get("Content-Type") or "")
                result = server.scorer.score(image)
            except ValueError as exc:  # ImageError is a ValueError
                self._send(400, {"message": str(exc)})
                return
            self._send(200, result)

    return Handler
