"""GET /statistics/devices and /statistics/service: IoT Hub's registry and service counters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from cloud_hub.api import call_service
from cloud_hub.auth import get_hub, require
from cloud_hub.hub import Hub
from cloud_hub.tokens import SCOPE_REGISTRY_READ
from cloud_hub.twin_query import Queries

router = APIRouter(tags=["registry"])
read = [Depends(require(SCOPE_REGISTRY_READ))]


def _count_by(hub: Hub, field: str) -> dict[str, int]:
    page = Queries(hub.db).run(f"SELECT {field}, COUNT() AS n FROM devices GROUP BY {field}")
    return {str(row.get(field)): int(row["n"]) for row in page.items}


def device_statistics(hub: Hub) -> dict[str, int]:
    by_status = _count_by(hub, "status")
    return {
        "totalDeviceCount": sum(by_status.values()),
        "enabledDeviceCount": by_status.get("enabled", 0),
        "disabledDeviceCount": by_status.get("disabled", 0),
    }


def service_statistics(hub: Hub) -> dict[str, int]:
    return {"connectedDeviceCount": _count_by(hub, "connectionState").get("Connected", 0)}


@router.get("/statistics/devices", dependencies=read, summary="Device counts of the registry")
async def get_device_statistics(hub: Hub = Depends(get_hub)) -> dict[str, Any]:
    return await call_service(device_statistics, hub)


@router.get("/statistics/service", dependencies=read, summary="Connected device count")
async def get_service_statistics(hub: Hub = Depends(get_hub)) -> dict[str, Any]:
    return await call_service(service_statistics, hub)


def install(app: FastAPI, hub: Hub) -> None:
    app.include_router(router)
