"""Edge deployments on one device: ``applyConfigurationContent`` and module identities.

``POST /devices/{id}/applyConfigurationContent`` (IoT Hub's "set modules") validates a deployment's
``modulesContent`` and replaces the desired properties of each module twin it names, ``$edgeAgent``
first. IoT Hub also creates the module identity of every module in an edge device's ``$edgeAgent``
desired properties, so each module can authenticate and has a module twin for its desired
properties; the hub does that whenever the ``$edgeAgent`` desired properties change. Identities of
modules a deployment drops are left alone, as IoT Hub does.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, Response

from cloud_hub.api import call_service
from cloud_hub.auth import get_hub, require
from cloud_hub.errors import HubError, InvalidInput
from cloud_hub.events import TwinDesiredChanged
from cloud_hub.hub import Hub
from cloud_hub.tokens import SCOPE_DEPLOY
from edgefleet.deployment_check import check_deployment
from edgefleet.manifest import extract_modules_content

log = logging.getLogger(__name__)

EDGE_AGENT = "$edgeAgent"
EDGE_HUB = "$edgeHub"


def deployment_module_ids(edge_agent_desired: dict[str, Any]) -> list[str]:
    """The custom module ids an ``$edgeAgent`` desired document names (system modules excluded)."""
    modules = edge_agent_desired.get("modules")
    if not isinstance(modules, dict):
        return []
    return [m for m in modules if isinstance(m, str) and m and not m.startswith("$")]


def ensure_module_identities(hub: Hub, device_id: str, module_ids: list[str]) -> list[str]:
    """Create the missing identities among ``module_ids``; returns those created."""
    existing = hub.registry.module_ids(device_id)
    created = []
    for module_id in module_ids:
        if module_id in existing:
            continue
        try:
            hub.registry.create_module(device_id, module_id, {"managedBy": "iotEdge"})
        except HubError as exc:  # a bad id in the manifest, or a racing creator
            log.info("module identity %s/%s not created: %s", device_id, module_id, exc)
            continue
        created.append(module_id)
    return created


def apply_configuration_content(hub: Hub, device_id: str, content: dict[str, Any]) -> None:
    """Validate ``content`` ({modulesContent: ...}); set each module twin's desired properties."""
    if not isinstance(content, dict):
        raise InvalidInput("request body must be a JSON object", path="body")
    device = hub.registry.get_device(device_id)
    if not device.get("capabilities", {}).get("iotEdge"):
        raise InvalidInput(f"device {device_id!r} is not an IoT Edge device", path="deviceId")
    verdict = check_deployment(content, layered=False)
    if not verdict.valid:
        first = verdict.errors[0]
        more = f" (and {len(verdict.errors) - 1} more errors)" if len(verdict.errors) > 1 else ""
        raise InvalidInput(first.message + more, path=first.path or "modulesContent")
    modules_content = extract_modules_content(content)
    order = [EDGE_AGENT, EDGE_HUB] + sorted(m for m in modules_content if not m.startswith("$"))
    for module_id in order:
        section = modules_content.get(module_id)
        if section is None:
            continue
        if module_id not in (EDGE_AGENT, EDGE_HUB):
            _ensure_identity(hub, device_id, module_id)
        tags = hub.twins.get_twin(device_id, module_id).get("tags") or {}
        desired = section.get("properties.desired", {})
        hub.twins.replace_twin(
            device_id, module_id, {"tags": tags, "properties": {"desired": desired}}
        )


def _ensure_identity(hub: Hub, device_id: str, module_id: str) -> None:
    if module_id not in {m["moduleId"] for m in hub.registry.list_modules(device_id)}:
        hub.registry.create_module(device_id, module_id, {"managedBy": "iotEdge"})


router = APIRouter(tags=["deployments"])


@router.post(
    "/devices/{device_id}/applyConfigurationContent",
    status_code=204,
    dependencies=[Depends(require(SCOPE_DEPLOY))],
    summary="Set an edge device's modules (deployment modulesContent)",
)
async def apply_content(
    device_id: str,
    body: dict[str, Any] = Body(..., examples=[{"modulesContent": {"$edgeAgent": {}}}]),
    hub: Hub = Depends(get_hub),
) -> Response:
    await call_service(apply_configuration_content, hub, device_id, body)
    return Response(status_code=204)


def install(app: FastAPI, hub: Hub) -> None:
    app.include_router(router)

    def on_desired(event: TwinDesiredChanged) -> None:
        # A module a deployment adds is in the patch (a merge patch names every added key).
        if event.identities_ensured:
            return
        if event.module_id == EDGE_AGENT and isinstance(event.patch.get("modules"), dict):
            named = {m: v for m, v in event.patch["modules"].items() if v is not None}
            module_ids = deployment_module_ids({"modules": named})
            if module_ids:
                ensure_module_identities(hub, event.device_id, module_ids)

    hub.events.subscribe(TwinDesiredChanged, on_desired)
