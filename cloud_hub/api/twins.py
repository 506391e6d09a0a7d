"""Device and module twin endpoints (IoT Hub service API paths)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header
from starlette.responses import Response

from cloud_hub.api import call_service, json_response
from cloud_hub.api.fast_twins import FastTwinRoutes
from cloud_hub.app import HubApp
from cloud_hub.auth import get_hub, require
from cloud_hub.hub import Hub
from cloud_hub.tokens import SCOPE_REGISTRY_READ, SCOPE_REGISTRY_WRITE

router = APIRouter(tags=["twins"])
read = [Depends(require(SCOPE_REGISTRY_READ))]
write = [Depends(require(SCOPE_REGISTRY_WRITE))]

TWIN = dict[str, Any]
PATCH_EXAMPLE = {"tags": {"location": {"region": "west"}}, "properties": {"desired": {"fps": 5}}}


@router.get(
    "/twins/{device_id}", dependencies=read, response_model=TWIN, summary="Get a device twin"
)
async def get_twin(device_id: str, hub: Hub = Depends(get_hub)) -> Response:
    return json_response(await call_service(hub.twins.get_twin, device_id))


@router.patch(
    "/twins/{device_id}",
    dependencies=write,
    response_model=TWIN,
    summary="Merge-patch tags and desired properties",
)
async def patch_twin(
    device_id: str,
    body: dict[str, Any] = Body(..., examples=[PATCH_EXAMPLE]),
    if_match: str | None = Header(None, alias="If-Match"),
    hub: Hub = Depends(get_hub),
) -> Response:
    return json_response(await call_service(hub.twins.patch_twin, device_id, None, body, if_match))


@router.put(
    "/twins/{device_id}",
    dependencies=write,
    response_model=TWIN,
    summary="Replace tags and desired properties",
)
async def replace_twin(
    device_id: str,
    body: dict[str, Any] = Body(..., examples=[PATCH_EXAMPLE]),
    if_match: str | None = Header(None, alias="If-Match"),
    hub: Hub = Depends(get_hub),
) -> Response:
    return json_response(
        await call_service(hub.twins.replace_twin, device_id, None, body, if_match)
    )


@router.get(
    "/twins/{device_id}/modules/{module_id}",
    dependencies=read,
    response_model=TWIN,
    summary="Get a module twin",
)
async def get_module_twin(device_id: str, module_id: str, hub: Hub = Depends(get_hub)) -> Response:
    return json_response(await call_service(hub.twins.get_twin, device_id, module_id))


@router.patch(
    "/twins/{device_id}/modules/{module_id}",
    dependencies=write,
    response_model=TWIN,
    summary="Merge-patch a module twin's tags and desired properties",
)
async def patch_module_twin(
    device_id: str,
    module_id: str,
    body: dict[str, Any] = Body(..., examples=[PATCH_EXAMPLE]),
    if_match: str | None = Header(None, alias="If-Match"),
    hub: Hub = Depends(get_hub),
) -> Response:
    return json_response(
        await call_service(hub.twins.patch_twin, device_id, module_id, body, if_match)
    )


@router.put(
    "/twins/{device_id}/modules/{module_id}",
    dependencies=write,
    response_model=TWIN,
    summary="Replace a module twin's tags and desired properties",
)
async def replace_module_twin(
    device_id: str,
    module_id: str,
    body: dict[str, Any] = Body(..., examples=[PATCH_EXAMPLE]),
    if_match: str | None = Header(None, alias="If-Match"),
    hub: Hub = Depends(get_hub),
) -> Response:
    return json_response(
        await call_service(hub.twins.replace_twin, device_id, module_id, body, if_match)
    )


def install(app: FastAPI, hub: Hub) -> None:
    app.include_router(router)
    # GET/PATCH/PUT twin requests are answered by the lean path; the routes above document them
    if isinstance(app, HubApp):  # in front of FastAPI's own middleware
        app.add_front_layer(lambda inner: FastTwinRoutes(inner, hub))
    else:
        app.add_middleware(FastTwinRoutes, hub=hub)
