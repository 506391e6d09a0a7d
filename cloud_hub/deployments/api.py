"""REST routes of fleet deployments: IoT Hub's ``/configurations`` plus rollout and history.

``PUT /configurations/{id}`` (201 created, 200 updated; ``If-Match`` to update, 412 when stale),
``GET /configurations/{id}``, ``GET /configurations?top=N``, ``DELETE /configurations/{id}``
(204), ``POST /configurations/testQueries``; the extensions ``POST
/configurations/{id}/rollout/{pause|resume|abort}`` and ``GET /devices/{id}/deployments``.
Writes need the ``deploy`` scope, reads registry read. Assignment follows in the background.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Path, Query, Response

from cloud_hub.api import call_service, json_response
from cloud_hub.auth import get_hub, require
from cloud_hub.deployments.configuration import condition_error, metric_query_error
from cloud_hub.deployments.history import device_history
from cloud_hub.deployments.store import Configurations
from cloud_hub.deployments.worker import DeploymentWorker
from cloud_hub.errors import InvalidInput
from cloud_hub.hub import BackgroundService, Hub
from cloud_hub.tokens import NEED_CONFIGURATION_READ, SCOPE_DEPLOY

router = APIRouter(tags=["deployments"])
read = [Depends(require(NEED_CONFIGURATION_READ))]
write = [Depends(require(SCOPE_DEPLOY))]

CONFIGURATION_EXAMPLE = {
    "id": "cameras-v2",
    "content": {
        "modulesContent": {
            "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1"}},
        }
    },
    "targetCondition": "tags.plant='3'",
    "priority": 10,
    "labels": {"release": "v2"},
    "metrics": {"queries": {}},
    "rollout": {"batches": ["1", "10%", "100%"], "onAbort": "rollback"},
}


def _worker(hub: Hub) -> DeploymentWorker:
    worker: DeploymentWorker = hub.extensions["deployments"]
    return worker


def _configurations(hub: Hub) -> Configurations:
    return _worker(hub).configurations


def put_configuration(
    hub: Hub, config_id: str, body: Any, if_match: str | None
) -> tuple[dict[str, Any], bool]:
    worker = _worker(hub)
    doc, created, before = worker.configurations.put(config_id, body, if_match)
    worker.configuration_changed(before, worker.configurations.one(config_id))
    return doc, created


def delete_configuration(hub: Hub, config_id: str, if_match: str | None) -> None:
    worker = _worker(hub)
    before = worker.configurations.delete(config_id, if_match)
    worker.configuration_changed(before, None)


def rollout_command(hub: Hub, config_id: str, action: str) -> dict[str, Any]:
    worker = _worker(hub)
    doc, devices = worker.stepper.command(config_id, action)
    worker.devices_changed(devices)
    return doc


def test_queries(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object", path="body")
    condition = body.get("targetCondition") or ""
    if not isinstance(condition, str):
        raise InvalidInput("targetCondition must be a string", path="targetCondition")
    metrics = body.get("customMetricQueries") or {}
    if not isinstance(metrics, dict):
        raise InvalidInput("customMetricQueries must be a JSON object", path="customMetricQueries")
    errors = {name: metric_query_error(text) for name, text in metrics.items()}
    return {
        "targetConditionError": condition_error(condition),
        "customMetricQueryErrors": {name: e for name, e in errors.items() if e},
    }


@router.put(
    "/configurations/{config_id}",
    dependencies=write,
    summary="Create or update a configuration (edge deployment)",
    responses={201: {"description": "created"}, 200: {"description": "updated"}},
)
async def put(
    config_id: str = Path(..., max_length=128),
    body: dict[str, Any] = Body(..., examples=[CONFIGURATION_EXAMPLE]),
    if_match: str | None = Header(None, alias="If-Match"),
    hub: Hub = Depends(get_hub),
) -> Response:
    doc, created = await call_service(put_configuration, hub, config_id, body, if_match)
    return json_response(doc, status_code=201 if created else 200)


@router.get("/configurations/{config_id}", dependencies=read, summary="Get a configuration")
async def get(config_id: str, hub: Hub = Depends(get_hub)) -> Response:
    return json_response(await call_service(_configurations(hub).get, config_id))


@router.get("/configurations", dependencies=read, summary="List configurations")
async def list_configurations(
    top: int = Query(100, ge=1, le=1000), hub: Hub = Depends(get_hub)
) -> Response:
    return json_response(await call_service(_configurations(hub).list_json, top))


@router.delete(
    "/configurations/{config_id}",
    dependencies=write,
    status_code=204,
    summary="Delete a configuration (If-Match: etag or *)",
)
async def delete(
    config_id: str,
    if_match: str | None = Header(None, alias="If-Match"),
    hub: Hub = Depends(get_hub),
) -> Response:
    await call_service(delete_configuration, hub, config_id, if_match)
    return Response(status_code=204)


@router.post(
    "/configurations/testQueries",
    dependencies=read,
    summary="Check a target condition and custom metric queries",
)
async def test_queries_route(
    body: dict[str, Any] = Body(
        ...,
        examples=[
            {
                "targetCondition": "tags.plant='3'",
                "customMetricQueries": {"ok": "SELECT deviceId FROM devices"},
            }
        ],
    ),
) -> dict[str, Any]:
    return test_queries(body)


@router.post(
    "/configurations/{config_id}/rollout/{action}",
    dependencies=write,
    summary="Pause, resume or abort a staged rollout",
)
async def rollout_action(
    config_id: str,
    action: Literal["pause", "resume", "abort"],
    hub: Hub = Depends(get_hub),
) -> Response:
    return json_response(await call_service(rollout_command, hub, config_id, action))


@router.get(
    "/devices/{device_id}/deployments",
    dependencies=read,
    summary="Which deployments a device ran when (newest first)",
)
async def history(device_id: str, hub: Hub = Depends(get_hub)) -> Response:
    await call_service(hub.registry.get_device, device_id)  # 404 for an unknown device
    return json_response(await call_service(device_history, hub.db, device_id))


def install(app: FastAPI, hub: Hub) -> None:
    worker = DeploymentWorker(hub, Configurations(hub.db))
    hub.extensions["deployments"] = worker
    app.include_router(router)
    hub.add_background(BackgroundService("deployments", worker.start, worker.stop))
