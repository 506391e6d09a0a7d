"""A lean ASGI path for the hot twin routes: GET, PATCH and PUT ``/twins/{id}[/modules/{mid}]``.

FastAPI's routing, dependency solving and body validation cost more CPU than the twin service call
itself, and the hub serves from one process (one core under the GIL). This middleware answers those
requests straight from the ASGI scope: bearer token from the token cache, body parsed once with
python's json (as Starlette does: the accepted input and the error messages are FastAPI's),
one hop to a worker thread (writes: to the group-commit thread, cloud_hub.twin_commit), the
response encoded once. The FastAPI routes stay registered: they
describe the API in the OpenAPI schema and serve everything this path passes on (other methods,
trailing slashes, mounted apps).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from sqlalchemy.exc import DataError
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud_hub.api import _dumps
from cloud_hub.errors import Forbidden, HubError, Unauthorized
from cloud_hub.hub import Hub
from cloud_hub.tokens import SCOPE_REGISTRY_READ, SCOPE_REGISTRY_WRITE, has_scope
from cloud_hub.twins import TwinWrite, twin_write_sections

log = logging.getLogger(__name__)

_METHODS = {"GET": SCOPE_REGISTRY_READ, "PATCH": SCOPE_REGISTRY_WRITE, "PUT": SCOPE_REGISTRY_WRITE}
_JSON_HEADERS = [(b"content-type", b"application/json")]
# A twin holds at most 8 KB of tags and 32 KB of desired properties; a body far beyond that is
# refused while it streams in, before it costs memory or a JSON parse.
MAX_BODY_BYTES = 1024 * 1024


class _BodyError(Exception):
    """A request body FastAPI's ``dict`` body parameter would reject (400, same message)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {
            "errorCode": "ArgumentInvalid",
            "message": f"{self.path}: {self.message}",
            "path": self.path,
            "errors": [{"path": self.path, "message": self.message}],
        }


def _target(path: str) -> tuple[str, str | None] | None:
    """(device id, module id) of a twin path, None for any other path."""
    parts = path.split("/")
    if len(parts) == 3 and parts[1] == "twins" and parts[2]:
        return parts[2], None
    if len(parts) == 5 and parts[1] == "twins" and parts[3] == "modules" and parts[2] and parts[4]:
        return parts[2], parts[4]
    return None


def _is_json(content_type: str) -> bool:
    """FastAPI's test: ``application/json`` or ``application/*+json``."""
    media = content_type.split(";", 1)[0].strip().lower()
    main, slash, sub = media.partition("/")
    return bool(slash) and main == "application" and (sub == "json" or sub.endswith("+json"))


def _parse_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The JSON object of a twin body, with FastAPI's errors for anything else."""
    if not body:
        raise _BodyError("body", "Field required")
    if not content_type or not _is_json(content_type):
        raise _BodyError("body", "Input should be a valid dictionary")
    try:
        data = json.loads(
            body
        )  # what Starlette's request.json() does (orjson reads big ints as floats)
    except json.JSONDecodeError as exc:
        raise _BodyError(f"body:{exc.pos}", "JSON decode error") from exc
    except UnicodeDecodeError as exc:
        raise _BodyError("body:0", "JSON decode error") from exc
    if not isinstance(data, dict):
        raise _BodyError("body", "Input should be a valid dictionary")
    return data


class FastTwinRoutes:
    """ASGI middleware answering the twin GET/PATCH/PUT routes; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, hub: Hub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            scope_needed = _METHODS.get(scope["method"])
            if scope_needed is not None:
                target = _target(scope["path"])
                if target is not None:
                    await self._serve(scope, receive, send, scope_needed, *target)
                    return
        await self.app(scope, receive, send)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        needed: str,
        device_id: str,
        module_id: str | None,
    ) -> None:
        authorization = content_type = if_match = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"if-match":
                if_match = value.decode("latin-1")
        method = scope["method"]
        body = b""
        if method != "GET":
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > MAX_BODY_BYTES:
                    too_large = _BodyError("body", f"larger than {MAX_BODY_BYTES} bytes")
                    await self._respond(send, 413, too_large.to_json(), _JSON_HEADERS)
                    return
        status = 200
        headers = _JSON_HEADERS
        try:
            await self._authorize(authorization, needed)
            twins = self.hub.twins
            loop = asyncio.get_running_loop()
            if method == "GET":
                result: Any = await loop.run_in_executor(None, twins.get_twin, device_id, module_id)
            else:
                replace = method == "PUT"
                tags, desired = twin_write_sections(_parse_body(body, content_type), replace)
                write = TwinWrite(device_id, module_id, tags, desired, if_match, replace)
                result = await self.hub.twin_commit.write(write)
        except HubError as exc:
            status, result = exc.status, exc.to_json()
            if status == 401:
                headers = [*_JSON_HEADERS, (b"www-authenticate", b"Bearer")]
        except _BodyError as exc:
            status, result = 400, exc.to_json()
        except DataError as exc:  # e.g. a NUL character in an id (PostgreSQL text cannot hold one)
            log.info("rejected by the database: %s", exc.orig)
            status = 400
            result = {
                "errorCode": "ArgumentInvalid",
                "message": "a value in the request is not storable",
            }
        await self._respond(send, status, result, headers)

    @staticmethod
    async def _respond(
        send: Send, status: int, result: Any, headers: list[tuple[bytes, bytes]]
    ) -> None:
        payload = _dumps(result)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(payload)).encode()), *headers],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _authorize(self, authorization: str | None, needed: str) -> None:
        """What ``cloud_hub.auth.require`` checks, from the same token cache."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if not (scheme and token) or scheme.lower() != "bearer":
            raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        tokens = self.hub.tokens
        hit, scopes = tokens.cached_scopes(token)
        if not hit:  # look it up off the event loop
            scopes = await asyncio.get_running_loop().run_in_executor(None, tokens.scopes_of, token)
        if scopes is None:
            raise Unauthorized("invalid token")
        if not has_scope(scopes, needed):
            raise Forbidden(f"token lacks the {needed!r} scope")
