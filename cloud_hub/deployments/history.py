"""Per-device deployment history: what each device was given when, and whether it succeeded."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update

from cloud_hub.db import Database
from cloud_hub.deployments.tables import DeviceDeploymentRow
from cloud_hub.models import TwinRow
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


def prune_history(db: Database, keep: int = MAX_HISTORY) -> int:
    """Keep each device's newest ``keep`` spans and its newest successful one (the rollback
    target); returns how many spans were deleted. One statement for the whole fleet."""
    spans = DeviceDeploymentRow
    newest = func.row_number().over(partition_by=spans.device_id, order_by=spans.id.desc())
    newest_success = func.row_number().over(
        partition_by=(spans.device_id, spans.succeeded_at.is_(None)), order_by=spans.id.desc()
    )
    ranked = select(
        spans.id,
        newest.label("n"),
        newest_success.label("s"),
        spans.succeeded_at.is_not(None).label("ok"),
    ).subquery()
    doomed = select(ranked.c.id).where(ranked.c.n > keep, ~(ranked.c.ok & (ranked.c.s == 1)))
    with db.write() as session:
        result = session.execute(delete(spans).where(spans.id.in_(doomed)))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def reconcile_successes(db: Database) -> int:
    """Mark open spans whose device's stored ``$edgeAgent`` report already shows success.

    Reports arrive as events in the process that received them; this catches the ones another
    process received, or one that died before its worker saw them. Returns the spans marked.
    """
    spans = DeviceDeploymentRow
    open_spans = select(spans.device_id, spans.desired_version).where(
        spans.ended_at.is_(None), spans.succeeded_at.is_(None), spans.desired_version.is_not(None)
    )
    marked = 0
    with db.read_conn() as conn:
        pending = {device_id: version for device_id, version in conn.execute(open_spans)}
        if not pending:
            return 0
        reports = conn.execute(
            select(TwinRow.device_id, TwinRow.reported).where(
                TwinRow.module_id == "$edgeAgent", TwinRow.device_id.in_(list(pending))
            )
        ).all()
    for device_id, reported in reports:
        status = (reported or {}).get("lastDesiredStatus") or {}
        version = (reported or {}).get("lastDesiredVersion")
        required = pending[device_id]
        if status.get("code") == 200 and isinstance(version, int) and required is not None:
            if version < required:
                continue
            mark_succeeded(db, device_id, reported)
            marked += 1
    return marked


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
