"""REST side of messaging, and the hook that starts the broker and the MQTT service client.

Settings (``hub serve`` options, kept in ``HubSettings.model_extra``): ``broker`` (``embedded``,
``mosquitto`` or ``mqtt(s)://host:port``), ``mqtt_port`` (0 = a free port, kept across restarts),
``cert_port`` (the broker's X.509 listener), ``mqtt_host``.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from sqlalchemy import select

from cloud_hub import events
from cloud_hub.api import call_service
from cloud_hub.auth import get_hub, require
from cloud_hub.broker.base import Broker, open_broker
from cloud_hub.ca import HubCA
from cloud_hub.errors import InvalidInput, NotFound
from cloud_hub.hub import BackgroundService, Hub
from cloud_hub.mqtt.service import MqttService
from cloud_hub.mqtt.tables import MessageRow
from cloud_hub.tokens import SCOPE_REGISTRY_READ, SCOPE_REGISTRY_WRITE
from edgefleet import protocol as p

router = APIRouter(tags=["messaging"])
read = [Depends(require(SCOPE_REGISTRY_READ))]
write = [Depends(require(SCOPE_REGISTRY_WRITE))]


class Messaging:
    """The broker, the service client and the CA of one hub process."""

    def __init__(self, hub: Hub) -> None:
        extra = hub.settings.model_extra or {}
        self.hub = hub
        self.ca = HubCA((hub.settings.data_dir / "ca").resolve())
        host = str(extra.get("mqtt_host") or hub.settings.host)
        self.advertised_host = _advertised_host(hub.settings.public_host_name, host)
        names = [self.advertised_host, host, "localhost", "127.0.0.1"]
        self.ca.ensure(list(dict.fromkeys(n for n in names if n not in ("0.0.0.0", "::"))))
        options: dict[str, Any] = {
            "registry": hub.registry,
            "ca": self.ca,
            "mqtt_port": int(extra.get("mqtt_port") or 0),
            "cert_port": int(extra.get("cert_port") or 0),
            "mqtt_host": extra.get("mqtt_host"),
        }
        self.broker: Broker = open_broker(
            str(extra.get("broker") or "embedded"),
            hub.settings.data_dir,
            hub.settings.host,
            options,
        )
        self.service = MqttService(
            hub, self.broker.endpoint, direct_publish=getattr(self.broker, "publish_direct", None)
        )
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._sync_thread: threading.Thread | None = None
        self._unsubscribe = hub.events.subscribe(
            (events.DeviceCreated, events.DeviceUpdated, events.DeviceDeleted),
            lambda _e: self._dirty.set(),
        )

    async def start(self) -> None:
        await self.broker.start()
        await asyncio.to_thread(self.service.start)
        self._sync_thread = threading.Thread(
            target=self._sync_loop, name="broker-sync", daemon=True
        )
        self._sync_thread.start()

    async def stop(self) -> None:
        self._unsubscribe()
        self._stop.set()
        await asyncio.to_thread(self.service.stop)
        await self.broker.stop()

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            if not self._dirty.wait(0.5):
                continue
            self._stop.wait(0.05)  # coalesce bursts of registry changes
            self._dirty.clear()
            try:
                self.broker.sync()
            except Exception:  # noqa: BLE001 - retried on the next change
                import logging

                logging.getLogger(__name__).exception("broker sync failed")

    def credentials(self, device_id: str) -> dict[str, Any]:
        device = self.hub.registry.get_device(device_id)
        ep = self.broker.endpoint
        keys = device.get("authentication", {}).get("symmetricKey", {})
        key = keys.get("primaryKey")
        return {
            "host": self.advertised_host if ep.kind != "external" else ep.host,
            "port": ep.port,
            "tls": ep.tls,
            "ca_file": str(ep.ca_file) if ep.ca_file else None,
            "caCertificate": ep.ca_file.read_text() if ep.ca_file else None,
            "client_id": device_id,
            "username": p.mqtt_username(device_id),
            "password": p.mqtt_password(device_id, key) if key else None,
            "cert_port": ep.cert_port,
        }


def _advertised_host(public_host_name: str | None, host: str) -> str:
    """The host name devices should use: the public host name's host, else the bind address
    (the machine's name when bound to every interface)."""
    if public_host_name:
        name, sep, port = public_host_name.rpartition(":")
        return name if sep and port.isdigit() and ":" not in name else public_host_name
    if host in ("0.0.0.0", "::", ""):
        import socket

        return socket.getfqdn()
    return host


def _messaging(request: Request) -> Messaging:
    messaging: Messaging = request.app.state.messaging
    return messaging


def _since(value: str | None) -> tuple[int, datetime | None]:
    if not value:
        return 0, None
    if value.isdigit():
        return int(value), None
    try:
        return 0, datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput("since must be a sequence number or an ISO 8601 time") from exc


def _iso(when: datetime) -> str:
    if when.tzinfo is None:  # SQLite drops the zone; we store UTC
        return when.isoformat() + "Z"
    return when.isoformat().replace("+00:00", "Z")


def _message_json(row: MessageRow) -> dict[str, Any]:
    body: dict[str, Any]
    try:
        body = {"body": row.body.decode("utf-8"), "bodyEncoding": "utf-8"}
    except UnicodeDecodeError:
        body = {"body": base64.b64encode(row.body).decode(), "bodyEncoding": "base64"}
    props = row.properties or {}
    return {
        "sequenceNumber": row.seq,
        "messageId": row.message_id,
        "deviceId": row.device_id,
        "moduleId": row.module_id or None,
        "enqueuedTimeUtc": _iso(row.enqueued_at),
        "systemProperties": props.get("system", {}),
        "properties": props.get("custom", {}),
        **body,
    }


def list_messages(hub: Hub, device_id: str, since: str | None, limit: int) -> dict[str, Any]:
    hub.registry.get_device(device_id)
    after, when = _since(since)
    stmt = select(MessageRow).where(MessageRow.device_id == device_id, MessageRow.seq > after)
    if when is not None:
        stmt = stmt.where(MessageRow.enqueued_at >= when)
    stmt = stmt.order_by(MessageRow.seq).limit(limit)
    with hub.db.read() as session:
        rows = list(session.scalars(stmt))
    items = [_message_json(r) for r in rows]
    return {"messages": items, "next": str(rows[-1].seq) if rows else (since or None)}


@router.get("/devices/{device_id}/messages", dependencies=read, summary="Stored telemetry")
async def get_messages(
    device_id: str,
    since: str | None = Query(None, description="Sequence number (exclusive) or ISO 8601 time."),
    limit: int = Query(100, ge=1, le=10_000),
    hub: Hub = Depends(get_hub),
) -> dict[str, Any]:
    return await call_service(list_messages, hub, device_id, since, limit)


def _invoke(messaging: Messaging, device_id: str, module_id: str | None, body: Any) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get("methodName"), str):
        raise InvalidInput("methodName is required", path="methodName")
    try:
        response_timeout = float(body.get("responseTimeoutInSeconds") or 30)
        connect_timeout = float(body.get("connectTimeoutInSeconds") or 0)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("timeouts must be numbers") from exc
    if not (0 <= connect_timeout <= 300 and 0 < response_timeout <= 300):
        raise InvalidInput("timeouts must be within 0..300 seconds")
    return messaging.service.invoke_method(
        device_id,
        module_id,
        body["methodName"],
        body.get("payload"),
        response_timeout,
        connect_timeout,
    )


METHOD_EXAMPLE = {"methodName": "reboot", "payload": {}, "responseTimeoutInSeconds": 30}


@router.post("/twins/{device_id}/methods", dependencies=write, summary="Invoke a direct method")
async def invoke_device_method(
    device_id: str,
    request: Request,
    body: Any = Body(..., examples=[METHOD_EXAMPLE]),
) -> Any:
    return await call_service(_invoke, _messaging(request), device_id, None, body)


@router.post(
    "/twins/{device_id}/modules/{module_id}/methods",
    dependencies=write,
    summary="Invoke a module's direct method",
)
async def invoke_module_method(
    device_id: str,
    module_id: str,
    request: Request,
    body: Any = Body(..., examples=[METHOD_EXAMPLE]),
) -> Any:
    return await call_service(_invoke, _messaging(request), device_id, module_id, body)


@router.get(
    "/devices/{device_id}/mqttCredentials",
    dependencies=write,
    summary="MQTT connection settings of a device (primary key)",
)
async def mqtt_credentials(device_id: str, request: Request) -> dict[str, Any]:
    return await call_service(_messaging(request).credentials, device_id)


def _issue(messaging: Messaging, device_id: str) -> dict[str, Any]:
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


def _revoke(messaging: Messaging, device_id: str) -> dict[str, Any]:
    serial = messaging.ca.revoke_device(device_id)
    if serial is None:
        raise NotFound(f"no certificate was issued to {device_id}")
    messaging.broker.sync()  # rewrites the CRL and reloads the broker
    messaging.broker.kick(device_id, None)
    return {"deviceId": device_id, "revokedSerialNumber": str(serial)}


@router.post(
    "/devices/{device_id}/certificate",
    dependencies=write,
    summary="Issue an X.509 device certificate signed by the hub CA",
)
async def issue_certificate(device_id: str, request: Request) -> dict[str, Any]:
    return await call_service(_issue, _messaging(request), device_id)


@router.delete(
    "/devices/{device_id}/certificate",
    dependencies=write,
    summary="Revoke the device certificate issued last (CRL)",
)
async def revoke_certificate(device_id: str, request: Request) -> dict[str, Any]:
    return await call_service(_revoke, _messaging(request), device_id)


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
        else p.Message.from_body(json_bytes(payload))
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


def json_bytes(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


@router.post(
    "/devices/{device_id}/messages/devicebound",
    dependencies=write,
    summary="Send a cloud-to-device message (QoS 1, kept for an offline device's session)",
)
async def send_c2d(device_id: str, request: Request, body: Any = Body(...)) -> dict[str, Any]:
    return await call_service(_send_c2d, _messaging(request), device_id, body)


@router.get("/messaging/stats", dependencies=read, summary="Ingest counters of this hub process")
async def stats(
    request: Request, reset: bool = Query(False, description="Start a new measurement window.")
) -> dict[str, Any]:
    service = _messaging(request).service
    body = await call_service(service.stats.json)
    if reset:
        service.stats.reset_window()
    return body


def install(app: FastAPI, hub: Hub) -> None:
    messaging = Messaging(hub)
    app.state.messaging = messaging
    app.include_router(router)
    hub.add_background(BackgroundService("messaging", messaging.start, messaging.stop))
