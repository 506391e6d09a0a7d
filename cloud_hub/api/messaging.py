"""REST routes of messaging: stored telemetry, direct methods, cloud-to-device messages, device
MQTT credentials and X.509 certificates, ingest counters. They use the broker, CA and MQTT
service client that ``cloud_hub.mqtt.extension`` starts with the hub (``app.state.messaging``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request

from cloud_hub.api import call_service
from cloud_hub.auth import get_hub, require
from cloud_hub.errors import InvalidInput, NotFound
from cloud_hub.hub import Hub
from cloud_hub.mqtt.extension import Messaging
from cloud_hub.mqtt.stored_messages import list_messages
from cloud_hub.tokens import NEED_SERVICE_CONNECT, SCOPE_REGISTRY_READ, SCOPE_REGISTRY_WRITE
from edgefleet import protocol as p

router = APIRouter(tags=["messaging"])
read = [Depends(require(SCOPE_REGISTRY_READ))]
write = [Depends(require(SCOPE_REGISTRY_WRITE))]
service = [Depends(require(NEED_SERVICE_CONNECT))]

METHOD_EXAMPLE = {"methodName": "reboot", "payload": {}, "responseTimeoutInSeconds": 30}


def _messaging(request: Request) -> Messaging:
    messaging: Messaging = request.app.state.messaging
    return messaging


DeviceOperation = Callable[[Messaging, str], dict[str, Any]]


def _device_route(
    method: str, path: str, summary: str
) -> Callable[[DeviceOperation], DeviceOperation]:
    """Register ``operation(messaging, device_id)`` as a write-scoped route of that name, run in
    a worker thread."""

    def register(operation: DeviceOperation) -> DeviceOperation:
        async def endpoint(device_id: str, request: Request) -> dict[str, Any]:
            return await call_service(operation, _messaging(request), device_id)

        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            dependencies=write,
            summary=summary,
            name=operation.__name__,
        )
        return operation

    return register


@router.get("/devices/{device_id}/messages", dependencies=read, summary="Stored telemetry")
async def get_messages(
    device_id: str,
    since: str | None = Query(None, description="Sequence number (exclusive) or ISO 8601 time."),
    limit: int = Query(100, ge=1, le=10_000),
    hub: Hub = Depends(get_hub),
) -> dict[str, Any]:
    return await call_service(list_messages, hub, device_id, since, limit)


def invoke_method(messaging: Messaging, device_id: str, module_id: str | None, body: Any) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get("methodName"), str):
        raise InvalidInput("methodName is required", path="methodName")
    try:
        response_timeout = float(body.get("responseTimeoutInSeconds") or 30)
        connect_timeout = float(body.get("connectTimeoutInSeconds") or 0)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("timeouts must be numbers") from exc
    if not (0 <= connect_timeout <= 300 and 0 < response_timeout <= 300):
        raise InvalidInput("timeouts must be within 0..300 seconds")
    return messaging.service.methods.invoke(
        device_id,
        module_id,
        body["methodName"],
        body.get("payload"),
        response_timeout,
        connect_timeout,
    )


@router.post("/twins/{device_id}/methods", dependencies=service, summary="Invoke a direct method")
async def invoke_device_method(
    device_id: str,
    request: Request,
    body: Any = Body(..., examples=[METHOD_EXAMPLE]),
) -> Any:
    return await call_service(invoke_method, _messaging(request), device_id, None, body)


@router.post(
    "/twins/{device_id}/modules/{module_id}/methods",
    dependencies=service,
    summary="Invoke a module's direct method",
)
async def invoke_module_method(
    device_id: str,
    module_id: str,
    request: Request,
    body: Any = Body(..., examples=[METHOD_EXAMPLE]),
) -> Any:
    return await call_service(invoke_method, _messaging(request), device_id, module_id, body)


@_device_route(
    "GET",
    "/devices/{device_id}/mqttCredentials",
    "MQTT connection settings of a device (primary key)",
)
def mqtt_credentials(messaging: Messaging, device_id: str) -> dict[str, Any]:
    device = messaging.hub.registry.get_device(device_id)
    ep = messaging.broker.endpoint
    keys = device.get("authentication", {}).get("symmetricKey", {})
    key = keys.get("primaryKey")
    return {
        "host": messaging.advertised_host if ep.kind != "external" else ep.host,
        "port": ep.port,
        "tls": ep.tls,
        "ca_file": str(ep.ca_file) if ep.ca_file else None,
        "caCertificate": ep.ca_file.read_text() if ep.ca_file else None,
        "client_id": device_id,
        "username": p.mqtt_username(device_id),
        "password": p.mqtt_password(device_id, key) if key else None,
        "cert_port": ep.cert_port,
    }


@_device_route(
    "POST",
    "/devices/{device_id}/certificate",
    "Issue an X.509 device certificate signed by the hub CA",
)
def issue_certificate(messaging: Messaging, device_id: str) -> dict[str, Any]:
    messaging.hub.registry.get_device(device_id)
    issued = messaging.ca.issue_device_cert(device_id)
    return {
        "deviceId": device_id,
        "certificate": issued.cert_file.read_text(),
        "privateKey": issued.key_file.read_text(),
        "thumbprint": issued.thumbprint,
        "serialNumber": str(issued.serial),
        "caCertificate": messaging.ca.ca_file.read_text(),
    }


@_device_route(
    "DELETE",
    "/devices/{device_id}/certificate",
    "Revoke the device certificate issued last (CRL)",
)
def revoke_certificate(messaging: Messaging, device_id: str) -> dict[str, Any]:
    serial = messaging.ca.revoke_device(device_id)
    if serial is None:
        raise NotFound(f"no certificate was issued to {device_id}")
    messaging.broker.sync()  # rewrites the CRL and reloads the broker
    messaging.broker.kick(device_id, None)
    return {"deviceId": device_id, "revokedSerialNumber": str(serial)}


def _send_c2d(messaging: Messaging, device_id: str, body: Any) -> dict[str, Any]:
    messaging.hub.registry.get_device(device_id)
    if not isinstance(body, dict) or "payload" not in body:
        raise InvalidInput("body must be {'payload': ..., 'properties': {...}}", path="payload")
    props = body.get("properties") or {}
    if not isinstance(props, dict):
        raise InvalidInput("properties must be an object of strings", path="properties")
    payload = body["payload"]
    message = (
        p.Message.from_body(payload)
        if isinstance(payload, dict | list | str)
        else p.Message.from_body(json.dumps(payload).encode())
    )
    message.custom_properties = {str(k): str(v) for k, v in props.items()}
    if body.get("messageId"):
        message.message_id = str(body["messageId"])
    try:
        topic = message.c2d_topic(device_id)
    except p.ProtocolError as exc:
        raise InvalidInput(str(exc), path="properties") from exc
    messaging.service.publish(topic, message.data)
    return {"messageId": message.message_id}


@router.post(
    "/devices/{device_id}/messages/devicebound",
    dependencies=service,
    summary="Send a cloud-to-device message (QoS 1, kept for an offline device's session)",
)
async def send_c2d(device_id: str, request: Request, body: Any = Body(...)) -> dict[str, Any]:
    return await call_service(_send_c2d, _messaging(request), device_id, body)


@router.get("/messaging/stats", dependencies=read, summary="Ingest counters of this hub process")
async def stats(
    request: Request, reset: bool = Query(False, description="Start a new measurement window.")
) -> dict[str, Any]:
    service = _messaging(request).service
    body = {"instance": service.instance, **await call_service(service.stats.json)}
    if reset:
        service.stats.reset_window()
    return body


def install(app: FastAPI, hub: Hub) -> None:
    app.include_router(router)
