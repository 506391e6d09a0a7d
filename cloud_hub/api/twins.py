"""Device and module twin routes: GET, PATCH and PUT ``/twins/{id}[/modules/{mid}]``.

One ASGI handler (``TwinEndpoint``) serves them. FastAPI's routing, dependency solving and body
validation cost more CPU than the twin service call itself, and the hub serves from one process
(one core under the GIL), so a layer in front of FastAPI's middleware (``TwinFrontLayer``) hands
those requests to the handler straight from the ASGI scope. The handler is also a route of the
router (``TwinRoute``), which answers what the front layer passes on: a mounted app or a root
path, other methods (405) and trailing slashes (redirect). Its OpenAPI operations are declared
here (``openapi_paths``).

The handler reads the bearer token, ``If-Match`` and ``Content-Type`` from the ASGI headers,
checks the token with ``cloud_hub.auth.authorize``, parses the body with python's json as
Starlette does (the accepted input and the error messages are FastAPI's), takes one hop to a
worker thread (writes: to the group-commit thread, ``cloud_hub.twin_commit``) and encodes the
response once.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud_hub.api import _dumps
from cloud_hub.api.errors import ANSWERED, BodyInvalid, Reply, error_reply
from cloud_hub.app import HubApp
from cloud_hub.auth import authorize
from cloud_hub.hub import Hub
from cloud_hub.tokens import NEED_TWIN_READ, NEED_TWIN_WRITE
from cloud_hub.twins import TwinWrite, twin_write_sections

DEVICE_TWIN = "/twins/{device_id}"
MODULE_TWIN = "/twins/{device_id}/modules/{module_id}"
SCOPE_OF_METHOD = {
    "GET": NEED_TWIN_READ,
    "PATCH": NEED_TWIN_WRITE,
    "PUT": NEED_TWIN_WRITE,
}
# A twin holds at most 8 KB of tags and 32 KB of desired properties; a body far beyond that is
# refused while it streams in, before it costs memory or a JSON parse.
MAX_BODY_BYTES = 1024 * 1024
_JSON_HEADERS = [(b"content-type", b"application/json")]


def twin_target(path: str) -> tuple[str, str | None] | None:
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


def parse_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    """The JSON object of a twin body, with FastAPI's errors for anything else."""
    if not body:
        raise BodyInvalid("body", "Field required")
    if not content_type or not _is_json(content_type):
        raise BodyInvalid("body", "Input should be a valid dictionary")
    try:
        # what Starlette's request.json() does (orjson would read big integers as floats)
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise BodyInvalid(f"body:{exc.pos}", "JSON decode error") from exc
    except UnicodeDecodeError as exc:
        raise BodyInvalid("body:0", "JSON decode error") from exc
    if not isinstance(data, dict):
        raise BodyInvalid("body", "Input should be a valid dictionary")
    return data


async def _read_body(receive: Receive) -> bytes | None:
    """The request body; None when the client went away. BodyInvalid (413) past the limit."""
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > MAX_BODY_BYTES:
            raise BodyInvalid("body", f"larger than {MAX_BODY_BYTES} bytes", status=413)
    return body


class TwinEndpoint:
    """The handler of the twin routes (an ASGI app; the router passes the path parameters)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        await self.serve(scope, receive, send, params["device_id"], params.get("module_id"))

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, device_id: str, module_id: str | None
    ) -> None:
        method = scope["method"]
        authorization = content_type = if_match = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:  # the first, as Starlette
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"if-match":
                if_match = value.decode("latin-1")
        try:
            body = b"" if method == "GET" else await _read_body(receive)
            if body is None:
                return
            await authorize(self.hub, authorization, SCOPE_OF_METHOD[method], scope["path"])
            if method == "GET":
                loop = asyncio.get_running_loop()
                twins = self.hub.twins
                result: Any = await loop.run_in_executor(None, twins.get_twin, device_id, module_id)
            else:
                replace = method == "PUT"
                tags, desired = twin_write_sections(parse_body(body, content_type), replace)
                write = TwinWrite(device_id, module_id, tags, desired, if_match, replace)
                result = await self.hub.twin_commit.write(write)
        except ANSWERED as exc:
            await _respond(send, error_reply(exc))
            return
        await _respond(send, Reply(200, result))


async def _respond(send: Send, reply: Reply) -> None:
    payload = _dumps(reply.body)
    headers = [(b"content-length", str(len(payload)).encode()), *_JSON_HEADERS]
    headers += [(k.lower().encode(), v.encode()) for k, v in (reply.headers or {}).items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class TwinFrontLayer:
    """In front of FastAPI's middleware: GET/PATCH/PUT of a twin path at the app's root go
    straight to the handler; everything else goes on to ``app``."""

    def __init__(self, app: ASGIApp, endpoint: TwinEndpoint) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in SCOPE_OF_METHOD
            and not scope.get("root_path")
        ):
            target = twin_target(scope["path"])
            if target is not None:
                await self.endpoint.serve(scope, receive, send, *target)
                return
        await self.app(scope, receive, send)


class TwinRoute(Route):
    """A router entry of the twin handler: GET, PATCH and PUT (no implicit HEAD)."""

    def __init__(self, path: str, endpoint: TwinEndpoint) -> None:
        super().__init__(path, endpoint, methods=list(SCOPE_OF_METHOD), include_in_schema=False)
        self.methods = set(SCOPE_OF_METHOD)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in SCOPE_OF_METHOD:
            raise HTTPException(status_code=405, headers={"Allow": ", ".join(SCOPE_OF_METHOD)})
        await self.app(scope, receive, send)


# -- OpenAPI ---------------------------------------------------------------------------------

_PATCH_EXAMPLE = {"tags": {"location": {"region": "west"}}, "properties": {"desired": {"fps": 5}}}
_OPERATIONS = {  # path -> method -> (name, summary), as FastAPI would name a route function
    DEVICE_TWIN: {
        "get": ("get_twin", "Get a device twin"),
        "patch": ("patch_twin", "Merge-patch tags and desired properties"),
        "put": ("replace_twin", "Replace tags and desired properties"),
    },
    MODULE_TWIN: {
        "get": ("get_module_twin", "Get a module twin"),
        "patch": (
            "patch_module_twin",
            "Merge-patch a module twin's tags and desired properties",
        ),
        "put": ("replace_module_twin", "Replace a module twin's tags and desired properties"),
    },
}


def _title(name: str) -> str:
    return name.replace("_", " ").title()


def _object_schema(title: str, **extra: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": True, **extra, "title": title}


def _operation(path: str, method: str, name: str, summary: str) -> dict[str, Any]:
    """The operation FastAPI generated for a route function ``name(path params, body, If-Match)
    -> dict`` guarded by ``cloud_hub.auth.require``."""
    operation_id = re.sub(r"\W", "_", name + path) + "_" + method
    parameters: list[dict[str, Any]] = [
        {
            "name": param,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "title": _title(param)},
        }
        for param in re.findall(r"{(\w+)}", path)
    ]
    operation: dict[str, Any] = {
        "tags": ["twins"],
        "summary": summary,
        "operationId": operation_id,
        "security": [{"HTTPBearer": []}],
        "parameters": parameters,
    }
    if method != "get":
        parameters.append(
            {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "If-Match"},
            }
        )
        body_schema = _object_schema("Body", examples=[_PATCH_EXAMPLE])
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body_schema}},
        }
    response_schema = _object_schema(_title("Response_" + operation_id))
    operation["responses"] = {
        "200": {
            "description": "Successful Response",
            "content": {"application/json": {"schema": response_schema}},
        },
        "422": {
            "description": "Validation Error",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
            },
        },
    }
    return operation


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI path items of the twin routes."""
    return {
        path: {method: _operation(path, method, *named) for method, named in methods.items()}
        for path, methods in _OPERATIONS.items()
    }


def install(app: FastAPI, hub: Hub) -> None:
    if not isinstance(app, HubApp):
        raise TypeError("the twin routes need a HubApp (front layer and declared OpenAPI paths)")
    endpoint = TwinEndpoint(hub)
    app.router.routes += [TwinRoute(DEVICE_TWIN, endpoint), TwinRoute(MODULE_TWIN, endpoint)]
    app.document_paths(openapi_paths())
    app.add_front_layer(lambda inner: TwinFrontLayer(inner, endpoint))
