"""Module identities for the modules an IoT Edge deployment names.

IoT Hub creates the module identity of every module in an edge device's ``$edgeAgent`` desired
properties (its edgeAgent asks for them), so each module can authenticate and has a module twin the
deployment's ``properties.desired`` land in. Here the hub does it itself when the ``$edgeAgent``
module twin's desired properties change: missing identities are created (``managedBy: iotEdge``);
identities of modules the deployment drops are left alone, as IoT Hub does.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from cloud_hub.errors import HubError
from cloud_hub.events import TwinDesiredChanged
from cloud_hub.services import Hub

log = logging.getLogger(__name__)

EDGE_AGENT = "$edgeAgent"


def deployment_module_ids(edge_agent_desired: dict[str, Any]) -> list[str]:
    """The custom module ids an ``$edgeAgent`` desired document names (system modules excluded)."""
    modules = edge_agent_desired.get("modules")
    if not isinstance(modules, dict):
        return []
    return [m for m in modules if isinstance(m, str) and m and not m.startswith("$")]


def ensure_module_identities(hub: Hub, device_id: str) -> list[str]:
    """Create the missing module identities of ``device_id``'s deployment; returns those created."""
    desired = hub.twins.get_twin(device_id, EDGE_AGENT)["properties"]["desired"]
    existing = {m["moduleId"] for m in hub.registry.list_modules(device_id)}
    created = []
    for module_id in deployment_module_ids(desired):
        if module_id in existing:
            continue
        try:
            hub.registry.create_module(device_id, module_id, {"managedBy": "iotEdge"})
        except HubError as exc:  # a bad id in the manifest, or a racing creator
            log.info("module identity %s/%s not created: %s", device_id, module_id, exc)
            continue
        created.append(module_id)
    return created


def install(app: FastAPI, hub: Hub) -> None:
    def on_desired(event: TwinDesiredChanged) -> None:
        if event.module_id == EDGE_AGENT and "modules" in event.patch:
            ensure_module_identities(hub, event.device_id)

    hub.events.subscribe(TwinDesiredChanged, on_desired)
