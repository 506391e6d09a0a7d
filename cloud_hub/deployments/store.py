"""Stored configurations: create, update (etags), read, list, delete; rollout state and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cloud_hub.db import Database
from cloud_hub.deployments.configuration import (
    ConfigurationBody,
    content_unchanged,
    parse_body,
    system_metric_queries,
)
from cloud_hub.deployments.rollout import RolloutSpec, RolloutState, parse_rollout
from cloud_hub.deployments.tables import ConfigurationRow
from cloud_hub.errors import AlreadyExists, InvalidInput, NotFound, PreconditionFailed
from cloud_hub.identity import etag_matches, new_etag
from cloud_hub.twindoc import iso
from edgefleet.utctime import utc_now


class ConfigurationNotFound(NotFound):
    code = "ConfigurationNotFound"


class ConfigurationExists(AlreadyExists):
    code = "ConfigurationAlreadyExists"


@dataclass(frozen=True)
class StoredConfiguration:
    """What assignment, metrics and rollouts read of a configuration."""

    config_id: str
    kind: str
    layered: bool
    content: dict[str, Any]
    content_hash: str
    target_condition: str
    priority: int
    created: datetime
    etag: str
    rollout: RolloutSpec | None
    rollout_state: RolloutState | None
    metric_queries: dict[str, str]

    @property
    def sections(self) -> dict[str, Any]:
        """Module id -> section of an edge deployment; ``{"": deviceContent}`` otherwise."""
        content = self.content
        if self.kind == "modules":
            mc = content.get("modulesContent", content.get("moduleContent", {}))
            return dict(mc)
        return {"": dict(content.get("deviceContent") or content.get("moduleContent") or {})}

    def system_queries(self) -> dict[str, str]:
        return system_metric_queries(self.config_id, self.target_condition, self.kind)


def _stored(row: ConfigurationRow) -> StoredConfiguration:
    return StoredConfiguration(
        config_id=row.config_id,
        kind=row.content_kind,
        layered=row.layered,
        content=row.content,
        content_hash=row.content_hash,
        target_condition=row.target_condition,
        priority=row.priority,
        created=row.created_at,
        etag=row.etag,
        rollout=parse_rollout(row.rollout) if row.rollout else None,
        rollout_state=RolloutState.from_json(row.rollout_state) if row.rollout_state else None,
        metric_queries=dict(row.metric_queries or {}),
    )


def configuration_json(row: ConfigurationRow) -> dict[str, Any]:
    """The IoT Hub configuration JSON (plus ``rollout`` / ``rolloutStatus`` when staged)."""
    doc: dict[str, Any] = {
        "id": row.config_id,
        "schemaVersion": row.schema_version,
        "labels": row.labels or {},
        "content": row.content,
        "contentType": "assignment",
        "targetCondition": row.target_condition,
        "createdTimeUtc": iso(row.created_at),
        "lastUpdatedTimeUtc": iso(row.updated_at),
        "priority": row.priority,
        "systemMetrics": {
            "results": row.system_metric_results or {},
            "queries": system_metric_queries(row.config_id, row.target_condition, row.content_kind),
        },
        "metrics": {"results": row.metric_results or {}, "queries": row.metric_queries or {}},
        "etag": row.etag,
    }
    if row.rollout:
        doc["rollout"] = row.rollout
        state = RolloutState.from_json(row.rollout_state) if row.rollout_state else None
        doc["rolloutStatus"] = (
            state.summary() if state is not None else {"state": "notStarted", "reason": ""}
        )
    return doc


class Configurations:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ REST
    def put(
        self, config_id: str, body: Any, if_match: str | None
    ) -> tuple[dict[str, Any], bool, StoredConfiguration | None]:
        """Create or update; returns (JSON, created, the configuration as it was before)."""
        now = utc_now()
        with self.db.write() as session:
            row = self._lock(session, config_id)
            if row is None:
                if if_match not in (None, "*", '"*"'):
                    raise ConfigurationNotFound(f"configuration {config_id!r} not found")
                parsed = parse_body(config_id, body, creating=True)
                row = self._new_row(parsed, now)
                session.add(row)
                session.flush()
                return configuration_json(row), True, None
            if if_match is None:
                raise ConfigurationExists(
                    f"configuration {config_id!r} exists; update it with If-Match: <etag> or *"
                )
            if not etag_matches(if_match, row.etag):
                raise PreconditionFailed("configuration etag does not match If-Match")
            parsed = parse_body(config_id, body, creating=False)
            if not content_unchanged(row.content, body):
                raise InvalidInput(
                    "the content of a configuration cannot change: create a new configuration",
                    path="content",
                )
            before = _stored(row)
            self._update_row(row, parsed, now)
            session.flush()
            return configuration_json(row), False, before

    @staticmethod
    def _new_row(parsed: ConfigurationBody, now: datetime) -> ConfigurationRow:
        return ConfigurationRow(
            config_id=parsed.config_id,
            schema_version=parsed.schema_version,
            labels=parsed.labels,
            content=parsed.content,
            content_kind=parsed.kind,
            layered=parsed.layered,
            content_hash=parsed.content_hash,
            target_condition=parsed.target_condition,
            priority=parsed.priority,
            metric_queries=parsed.metric_queries,
            metric_results={},
            system_metric_results={},
            etag=new_etag(),
            created_at=now,
            updated_at=now,
            rollout=parsed.rollout.to_json() if parsed.rollout else None,
            rollout_state=None,
        )

    @staticmethod
    def _update_row(row: ConfigurationRow, parsed: ConfigurationBody, now: datetime) -> None:
        row.schema_version = parsed.schema_version
        row.labels = parsed.labels
        row.target_condition = parsed.target_condition
        row.priority = parsed.priority
        row.metric_queries = parsed.metric_queries
        row.etag = new_etag()
        row.updated_at = now
        if parsed.rollout_given:
            row.rollout = parsed.rollout.to_json() if parsed.rollout else None
            row.rollout_state = None
        elif row.rollout_state and row.rollout_state.get("state") == "rolledBack":
            row.rollout_state = None  # an updated configuration rolls out afresh

    def get(self, config_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            row = session.get(ConfigurationRow, config_id)
            if row is None:
                raise ConfigurationNotFound(f"configuration {config_id!r} not found")
            return configuration_json(row)

    def list_json(self, top: int) -> list[dict[str, Any]]:
        stmt = select(ConfigurationRow).order_by(ConfigurationRow.config_id).limit(top)
        with self.db.read() as session:
            return [configuration_json(row) for row in session.scalars(stmt)]

    def delete(self, config_id: str, if_match: str | None) -> StoredConfiguration:
        with self.db.write() as session:
            row = self._lock(session, config_id)
            if row is None:
                raise ConfigurationNotFound(f"configuration {config_id!r} not found")
            if not etag_matches(if_match, row.etag):
                raise PreconditionFailed("configuration etag does not match If-Match")
            before = _stored(row)
            session.execute(delete(ConfigurationRow).where(ConfigurationRow.config_id == config_id))
            return before

    # ------------------------------------------------------------------ services
    def all(self) -> list[StoredConfiguration]:
        with self.db.read() as session:
            return [_stored(row) for row in session.scalars(select(ConfigurationRow))]

    def one(self, config_id: str) -> StoredConfiguration:
        with self.db.read() as session:
            row = session.get(ConfigurationRow, config_id)
            if row is None:
                raise ConfigurationNotFound(f"configuration {config_id!r} not found")
            return _stored(row)

    @contextmanager
    def locked(self, config_id: str) -> Iterator[tuple[Session, ConfigurationRow | None]]:
        """A write transaction holding the configuration's row lock (one rollout stepper)."""
        with self.db.write() as session:
            yield session, self._lock(session, config_id)

    def _lock(self, session: Session, config_id: str) -> ConfigurationRow | None:
        stmt = select(ConfigurationRow).where(ConfigurationRow.config_id == config_id)
        if self.db.dialect == "postgresql":
            stmt = stmt.with_for_update()
        return session.scalars(stmt).first()

    def save_metrics(self, config_id: str, system: dict[str, int], custom: dict[str, int]) -> None:
        stmt = (
            update(ConfigurationRow)
            .where(ConfigurationRow.config_id == config_id)
            .values(system_metric_results=system, metric_results=custom)
        )
        with self.db.write() as session:
            session.execute(stmt)
