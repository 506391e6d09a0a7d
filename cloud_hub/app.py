"""The hub's FastAPI application: routers from EXTENSIONS, error shapes, lifespan, /health.

A feature plugs in by adding its module to ``EXTENSIONS``; the module defines
``install(app: FastAPI, hub: Hub) -> None`` that includes routers and may register background
services with ``hub.add_background(...)`` (started after the database is ready, stopped in reverse
order on shutdown).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud_hub.api.errors import Reply, error_reply, invalid_request
from cloud_hub.errors import HubError
from cloud_hub.hub import Hub, open_hub
from cloud_hub.settings import HubSettings

log = logging.getLogger(__name__)

EXTENSIONS: list[str] = [
    "cloud_hub.api.registry",
    "cloud_hub.api.twins",
    "cloud_hub.api.query",
    "cloud_hub.api.statistics",
    "cloud_hub.api.enrollment",
    "cloud_hub.api.logupload",
    "cloud_hub.edge_deployment",
    "cloud_hub.deployments.api",
    "cloud_hub.mqtt.extension",
    "cloud_hub.api.messaging",
    "cloud_hub.ui",
    "cloud_hub.event_bridge",
]


class HubApp(FastAPI):
    """FastAPI with optional ASGI layers in front of its own middleware stack, and OpenAPI paths
    declared for routes that are not FastAPI routes.

    ``add_front_layer`` puts a layer before FastAPI's middleware (error, telemetry and exception
    middleware, routing): for hot routes that answer requests themselves and pass the rest on.
    ``document_paths`` adds the OpenAPI path items of such routes to the schema.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._front: ASGIApp = super().__call__
        self._documented: dict[str, dict[str, Any]] = {}

    def add_front_layer(self, layer: Callable[[ASGIApp], ASGIApp]) -> None:
        self._front = layer(self._front)

    def document_paths(self, paths: dict[str, dict[str, Any]]) -> None:
        for path, item in paths.items():
            self._documented.setdefault(path, {}).update(item)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is not None:
            return self.openapi_schema
        schema = super().openapi()  # cached by FastAPI: the paths below are added once
        paths = schema.setdefault("paths", {})
        for path, item in self._documented.items():
            paths.setdefault(path, {}).update(item)
        return schema

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._front(scope, receive, send)


def _loc_path(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "header", "path", "cookie"):
        where, rest = parts[0], parts[1:]
        return where + (":" + ".".join(rest) if rest else "")
    return ".".join(parts)


def _json_reply(reply: Reply) -> JSONResponse:
    return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HubError)
    @app.exception_handler(DataError)
    async def answered_error(_request: Request, exc: HubError | DataError) -> JSONResponse:
        return _json_reply(error_reply(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [(_loc_path(e.get("loc", ())), str(e.get("msg", ""))) for e in exc.errors()]
        return _json_reply(invalid_request(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"errorCode": "HttpError", "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )


def create_app(settings: HubSettings | None = None, *, hub: Hub | None = None) -> FastAPI:
    """Build the app; pass ``hub`` to share services (and its database) with the caller."""
    own_hub = hub is None
    if hub is None:
        hub = open_hub(settings or HubSettings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        started = []
        try:
            for service in hub.background:
                log.info("starting %s", service.name)
                await service.start()
                started.append(service)
            _app.state.ready = True
            yield
        finally:
            _app.state.ready = False
            for service in reversed(started):
                try:
                    await service.stop()
                except Exception:
                    log.exception("stopping %s failed", service.name)
            if own_hub:
                hub.close()

    app = HubApp(
        title="edgefleet hub",
        version="0.1.0",
        description="Device registry, twins and queries with IoT Hub's service API paths.",
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.ready = False
    _install_error_handlers(app)

    @app.get("/health", tags=["service"], summary="200 when the hub is ready")
    def health() -> JSONResponse:
        if not app.state.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse(
            {
                "status": "ok",
                "database": hub.db.dialect,
                "hostName": hub.settings.resolved_public_host_name(),
            }
        )

    for name in EXTENSIONS:
        importlib.import_module(name).install(app, hub)
    return app
