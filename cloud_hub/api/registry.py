"""Device and module identity endpoints (IoT Hub service API paths)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Query, Response

from cloud_hub.api import call_service
from cloud_hub.auth import get_hub, require
from cloud_hub.hub import Hub
from cloud_hub.tokens import SCOPE_REGISTRY_READ, SCOPE_REGISTRY_WRITE

router = APIRouter(tags=["registry"])
read = [Depends(require(SCOPE_REGISTRY_READ))]
write = [Depends(require(SCOPE_REGISTRY_WRITE))]

DEVICE_EXAMPLE = {
    "deviceId": "camera-01",
    "status": "enabled",
    "authentication": {"type": "sas"},
    "capabilities": {"iotEdge": True},
}


@router.get("/devices", dependencies=read, summary="List devices (paged by device id)")
async def list_devices(
    response: Response,
    top: int = Query(100, ge=1, le=1000),
    continuation: str | None = Header(None, alias="x-ms-continuation"),
    hub: Hub = Depends(get_hub),
) -> list[dict[str, Any]]:
    devices, token = await call_service(hub.registry.list_devices, top, continuation)
    if token:
        response.headers["x-ms-continuation"] = token
    return devices


@router.post(
    "/devices",
    dependencies=write,
    summary="Bulk create/update/delete devices (importMode per item)",
)
async def bulk_devices(
    response: Response,
    body: list[dict[str, Any]] = Body(
        ..., examples=[[{"id": "camera-02", "importMode": "createOrUpdate", "tags": {"a": 1}}]]
    ),
    hub: Hub = Depends(get_hub),
) -> dict[str, Any]:
    from cloud_hub.bulk import bulk_import

    result = await call_service(bulk_import, hub, body)
    if not result["isSuccessful"]:
        response.status_code = 400
    return result


@router.get("/devices/{device_id}", dependencies=read, summary="Get a device identity")
async def get_device(device_id: str, hub: Hub = Depends(get_hub)) -> dict[str, Any]:
    return await call_service(hub.registry.get_device, device_id)


@router.put(
    "/devices/{device_id}",
    dependencies=write,
    summary="Create a device, or update it with If-Match",
)
async def put_device(
    device_id: str,
    body: dict[str, Any] = Body(..., examples=[DEVICE_EXAMPLE]),
    if_match: str | None = Header(None, alias="If-Match"),
    hub: Hub = Depends(get_hub),
) -> dict[str, Any]:
    if if_match is None:
        return await call_service(hub.registry.create_device, device_id, body)
    return await call_service(hub.registry.update_device, device_id, body, if_match)


@router.delete(
    "/devices/{device_id}", dependencies=write, status_code=204, summary="Delete a device"
)
async def delete_device(
    device_id: str,
    if_match: str | None = Header(None, alias="If-Match"),
    hub: Hub = Depends(get_hub),
) -> Response:
    await call_service(hub.registry.delete_device, device_id, if_match)
    return Response(status_code=204)


@router.get("/devices/{device_id}/modules", dependencies=read, summary="List a device's modules")
async def list_modules(device_id: str, hub: Hub = Depends(get_hub)) -> list[dict[str, Any]]:
    return await call_service(hub.registry.list_modules, device_id)


@router.get("/devices/{device_id}/modules/{module_id}", dependencies=read, summary="Get a module")
async def get_module(device_id: str, module_id: str, hub: Hub = Depends(get_hub)) -> dict[str, Any]:
    return await call_service(hub.registry.get_module, device_id, module_id)


@router.put(
    "/devices/{device_id}/modules/{module_id}",
    dependencies=write,
    summary="Create a module identity, or update it with If-Match",
)
async def put_module(
    device_id: str,
    module_id: str,
    body: dict[str, Any] = Body(..., examples=[{"moduleId": "camera"}]),
    if_match: str | None = Header(None, alias="If-Match"),
    hub: Hub = Depends(get_hub),
) -> dict[str, Any]:
    if if_match is None:
        return await call_service(hub.registry.create_module, device_id, module_id, body)
    return await call_service(hub.registry.update_module, device_id, module_id, body, if_match)


@router.delete(
    "/devices/{device_id}/modules/{module_id}",
    dependencies=write,
    status_code=204,
    summary="Delete a module identity",
)
async def delete_module(
    device_id: str,
    module_id: str,
    if_match: str | None = Header(None, alias="If-Match"),
    hub: Hub = Depends(get_hub),
) -> Response:
    await call_service(hub.registry.delete_module, device_id, module_id, if_match)
    return Response(status_code=204)


WHICH_KEY = Query("primary", description="primary, secondary or swap")


@router.post(
    "/devices/{device_id}/rotateKey",
    dependencies=write,
    summary="Give a device a new primary or secondary key, or swap the two",
)
async def rotate_device_key(
    device_id: str, which: str = WHICH_KEY, hub: Hub = Depends(get_hub)
) -> dict[str, Any]:
    return await call_service(hub.registry.rotate_key, device_id, which)


@router.post(
    "/devices/{device_id}/modules/{module_id}/rotateKey",
    dependencies=write,
    summary="Give a module a new primary or secondary key, or swap the two",
)
async def rotate_module_key(
    device_id: str, module_id: str, which: str = WHICH_KEY, hub: Hub = Depends(get_hub)
) -> dict[str, Any]:
    return await call_service(hub.registry.rotate_key, device_id, which, module_id)


def install(app: FastAPI, hub: Hub) -> None:
    app.include_router(router)
