"""REST routes of DPS-style enrollment groups and device self-registration.

``PUT /enrollmentGroups/{id}`` (registry write) stores a group with its symmetric keys (generated
when absent). ``POST /registrations/{registrationId}/register`` (no bearer token; a SAS token made
with the group-derived device key) creates the device (idempotent). Storage and checks are in
``cloud_hub.enrollments.Enrollments`` (``hub.enrollments``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Response

from cloud_hub.auth import get_hub, require
from cloud_hub.hub import Hub
from cloud_hub.tokens import SCOPE_REGISTRY_READ, SCOPE_REGISTRY_WRITE

router = APIRouter(tags=["provisioning"])
read = [Depends(require(SCOPE_REGISTRY_READ))]
write = [Depends(require(SCOPE_REGISTRY_WRITE))]


@router.put(
    "/enrollmentGroups/{group_id}",
    dependencies=write,
    summary="Create or replace an enrollment group (symmetric-key attestation)",
)
def put_group(
    group_id: str, body: dict[str, Any] = Body(default={}), hub: Hub = Depends(get_hub)
) -> dict[str, Any]:
    return hub.enrollments.put_group(group_id, body)


@router.get("/enrollmentGroups/{group_id}", dependencies=read, summary="Get an enrollment group")
def get_group(group_id: str, hub: Hub = Depends(get_hub)) -> dict[str, Any]:
    return hub.enrollments.get_group(group_id)


@router.delete(
    "/enrollmentGroups/{group_id}",
    dependencies=write,
    status_code=204,
    summary="Delete an enrollment group (registered devices stay)",
)
def delete_group(group_id: str, hub: Hub = Depends(get_hub)) -> Response:
    hub.enrollments.delete_group(group_id)
    return Response(status_code=204)


@router.get(
    "/enrollmentGroups/{group_id}/registrations",
    dependencies=read,
    summary="Registrations made through an enrollment group",
)
def list_registrations(group_id: str, hub: Hub = Depends(get_hub)) -> list[dict[str, Any]]:
    hub.enrollments.get_group(group_id)  # 404 for an unknown group
    return hub.enrollments.list_registrations(group_id)


@router.post(
    "/registrations/{registration_id}/register",
    summary="Device self-registration with a group-derived key (SAS token)",
)
def register(
    registration_id: str,
    body: dict[str, Any] = Body(...),
    authorization: str = Header(""),
    hub: Hub = Depends(get_hub),
) -> dict[str, Any]:
    result = hub.enrollments.register(registration_id, body.get("enrollmentGroupId"), authorization)
    result["assignedHub"] = hub.settings.resolved_public_host_name()
    return result


def install(app: FastAPI, hub: Hub) -> None:
    app.include_router(router)
