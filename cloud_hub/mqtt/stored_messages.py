"""Stored telemetry as the REST API lists it (``GET /devices/{id}/messages``), and its removal
with a deleted device."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from cloud_hub.db import Database
from cloud_hub.errors import InvalidInput
from cloud_hub.hub import Hub
from cloud_hub.mqtt.tables import MessageRow
from edgefleet.digits import ascii_uint
from edgefleet.utctime import parse_utc_text, utc_text


def parse_since(value: str | None) -> tuple[int, datetime | None]:
    """A ``since`` cursor: (sequence number after which to list, earliest enqueued time)."""
    if not value:
        return 0, None
    sequence = ascii_uint(value)
    if sequence is not None:
        return sequence, None
    try:
        return 0, parse_utc_text(value)
    except ValueError as exc:
        raise InvalidInput("since must be a sequence number or an ISO 8601 time") from exc


def message_json(row: MessageRow) -> dict[str, Any]:
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
        "enqueuedTimeUtc": utc_text(row.enqueued_at),
        "systemProperties": props.get("system", {}),
        "properties": props.get("custom", {}),
        **body,
    }


def list_messages(hub: Hub, device_id: str, since: str | None, limit: int) -> dict[str, Any]:
    """A device's stored messages after ``since`` in sequence order, with the next cursor."""
    hub.registry.get_device(device_id)
    after, when = parse_since(since)
    stmt = select(MessageRow).where(MessageRow.device_id == device_id, MessageRow.seq > after)
    if when is not None:
        stmt = stmt.where(MessageRow.enqueued_at >= when)
    stmt = stmt.order_by(MessageRow.seq).limit(limit)
    with hub.db.read() as session:
        rows = list(session.scalars(stmt))
    items = [message_json(r) for r in rows]
    return {"messages": items, "next": str(rows[-1].seq) if rows else (since or None)}


def delete_messages(db: Database, device_id: str) -> None:
    """Remove a device's stored messages (a new device may reuse the id)."""
    with db.write() as session:
        session.execute(delete(MessageRow).where(MessageRow.device_id == device_id))
