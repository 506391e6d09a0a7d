"""Per-device deployment history: what each device was given when, and whether it succeeded."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from cloud_hub.db import Database
from cloud_hub.deployments.tables import DeviceDeploymentRow
from cloud_hub.twindoc import iso
from edgefleet.utctime import utc_now

MAX_HISTORY = 100


def history_json(row: DeviceDeploymentRow) -> dict[str, Any]:
    return {
        "configurations": row.configurations,
        "contentHash": row.content_hash,
        "desiredVersion": row.desired_version,
        "startedTimeUtc": iso(row.started_at),
        "succeededTimeUtc": iso(row.succeeded_at),
        "endedTimeUtc": iso(row.ended_at),
        "modules": row.modules,
    }


def device_history(db: Database, device_id: str, limit: int = MAX_HISTORY) -> list[dict[str, Any]]:
    """Newest first."""
    stmt = (
        select(DeviceDeploymentRow)
        .where(DeviceDeploymentRow.device_id == device_id)
        .order_by(DeviceDeploymentRow.id.desc())
        .limit(limit)
    )
    with db.read() as session:
        return [history_json(row) for row in session.scalars(stmt)]


def mark_succeeded(db: Database, device_id: str, reported: dict[str, Any]) -> None:
    """The device reported success on a desired version: its open span is a rollback target."""
    status = reported.get("lastDesiredStatus")
    version = reported.get("lastDesiredVersion")
    if not isinstance(status, dict) or status.get("code") != 200 or not isinstance(version, int):
        return
    stmt = (
        update(DeviceDeploymentRow)
        .where(
            DeviceDeploymentRow.device_id == device_id,
            DeviceDeploymentRow.ended_at.is_(None),
            DeviceDeploymentRow.succeeded_at.is_(None),
            DeviceDeploymentRow.desired_version <= version,
        )
        .values(succeeded_at=utc_now())
    )
    with db.write() as session:
        session.execute(stmt)
