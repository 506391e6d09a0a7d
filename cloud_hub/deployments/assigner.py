"""Writes assignment results to devices: module twins, ``configurations`` status, history.

``Assigner.assign(device_ids)`` decides with ``cloud_hub.deployments.assignment`` and acts in
batches. Each batch is decided twice: once without locks (to create missing module identities,
which take their own transactions), then again inside one write transaction that holds the
devices' row locks on PostgreSQL (SQLite's single writer serializes it), so two hub processes
never both write one device: the second finds the twins already at their target and writes
nothing. Twin events are published after the commit, which pushes desired patches to agents.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cloud_hub.db import Database
from cloud_hub.deployments.assignment import (
    Candidate,
    Selection,
    changed_twins,
    choose,
    deployment_modules,
    merge,
    statuses,
    strip_metadata,
    write_order,
)
from cloud_hub.deployments.configuration import content_hash
from cloud_hub.deployments.history import MAX_HISTORY
from cloud_hub.deployments.store import StoredConfiguration
from cloud_hub.deployments.tables import DeploymentContentRow, DeviceDeploymentRow
from cloud_hub.errors import HubError
from cloud_hub.events import EventBus
from cloud_hub.models import DEVICE_TWIN, DeviceRow, TwinRow
from cloud_hub.query import Condition, QueryError, matches, parse_condition
from cloud_hub.registry import Registry
from cloud_hub.twins import Twins, TwinWrite, twin_from_row, twin_select
from edgefleet.utctime import utc_now

log = logging.getLogger(__name__)

EDGE_AGENT = "$edgeAgent"
BATCH = 200
_CONFIG_TWINS = (DEVICE_TWIN, EDGE_AGENT)


def eligible(config: StoredConfiguration, device_id: str) -> bool:
    """Whether a matching configuration may be given to the device now (its rollout allows it)."""
    if config.rollout is None:
        return True
    state = config.rollout_state
    if state is None or state.state == "rolledBack":
        return False
    return state.state == "completed" or device_id in state.assigned()


@dataclass(frozen=True)
class _View:
    config: StoredConfiguration
    condition: Condition | None
    candidate: Candidate


def _views(configs: Iterable[StoredConfiguration]) -> list[_View]:
    views = []
    for config in configs:
        try:
            text = config.target_condition
            condition = parse_condition(text) if text else None
        except QueryError:  # stored conditions were validated; an old one that no longer parses
            log.warning("configuration %s: target condition does not parse", config.config_id)
            continue
        candidate = Candidate(
            config.config_id, config.priority, config.created, config.layered, config.sections
        )
        views.append(_View(config, condition, candidate))
    return views


@dataclass
class DevicePlan:
    """What one device should get; ``writes`` are the module twins that differ from it."""

    device_id: str
    statuses: dict[str, dict[str, str]]
    selection: Selection
    target: dict[str, dict[str, Any]] | None
    writes: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    current_statuses: dict[str, Any] = field(default_factory=dict)
    agent_desired_version: int | None = None
    #: module twin configurations: merge patches and statuses per (non-edge-managed) module twin
    module_patches: dict[str, dict[str, Any]] = field(default_factory=dict)
    module_statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    current_module_statuses: dict[str, dict[str, Any]] = field(default_factory=dict)

    def changes_anything(self) -> bool:
        return bool(
            self.writes
            or self.module_patches
            or self.statuses != self.current_statuses
            or self.module_statuses != self.current_module_statuses
        )

    def target_sections(self) -> dict[str, Any]:
        """The target as configuration sections (module id -> {properties.desired: ...})."""
        return {m: {"properties.desired": d} for m, d in (self.target or {}).items()}

    def history_key(self) -> list[dict[str, str]]:
        return [
            {"id": c.config_id, "contentHash": content_hash(c.sections)}
            for c in self.selection.chosen
        ]


@dataclass(frozen=True)
class _Span:
    configurations: list[dict[str, str]]
    succeeded_at: datetime | None
    content: dict[str, Any]


@dataclass
class _DeviceDocs:
    twins: dict[str, dict[str, Any]]  # module id ("" for the device) -> twin JSON
    history: list[_Span]  # newest first; loaded only when a rollback may need it


class Assigner:
    def __init__(self, db: Database, twins: Twins, registry: Registry, bus: EventBus) -> None:
        self.db = db
        self.twins = twins
        self.registry = registry
        self.bus = bus

    def assign(self, device_ids: Iterable[str], configs: Sequence[StoredConfiguration]) -> int:
        """Bring these devices to their assignment; returns how many devices changed."""
        all_views = _views(configs)
        views = [v for v in all_views if v.config.kind == "modules"]
        device_views = [v for v in all_views if v.config.kind == "device"]
        module_views = [v for v in all_views if v.config.kind == "module"]
        rolled_back = {
            c.config_id
            for c in configs
            if c.rollout_state is not None and c.rollout_state.state == "rolledBack"
        }
        ids = sorted(set(device_ids))
        changed = 0
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            with self.db.read_conn() as conn:
                plans = self._plan(conn, chunk, views, device_views, module_views, rolled_back)
            self._create_missing_modules(plans)
            with self.db.write_conn() as conn:
                self._lock(conn, chunk)
                plans = self._plan(conn, chunk, views, device_views, module_views, rolled_back)
                events = self._write(conn, plans)
            for event in events:
                self.bus.publish(event)
            changed += sum(1 for p in plans if p.changes_anything())
        return changed

    # ------------------------------------------------------------------ deciding
    def _plan(
        self,
        conn: Connection,
        chunk: list[str],
        views: list[_View],
        device_views: list[_View],
        module_views: list[_View],
        rolled_back: set[str],
    ) -> list[DevicePlan]:
        docs = self._load(conn, chunk, with_history=bool(rolled_back))
        plans = []
        for device_id in chunk:
            doc = docs.get(device_id)
            if doc is None or DEVICE_TWIN not in doc.twins:
                continue  # deleted meanwhile
            plan = _plan_device(device_id, doc, views, device_views, rolled_back)
            _plan_module_twins(plan, doc, module_views)
            plans.append(plan)
        return plans

    def _load(
        self, conn: Connection, chunk: list[str], with_history: bool
    ) -> dict[str, _DeviceDocs]:
        docs: dict[str, _DeviceDocs] = {}
        stmt = twin_select().where(TwinRow.device_id.in_(chunk))
        for row in conn.execute(stmt):
            twin = twin_from_row(row)
            doc = docs.setdefault(twin["deviceId"], _DeviceDocs({}, []))
            doc.twins[twin.get("moduleId", DEVICE_TWIN)] = twin
        if with_history:  # only a rollback reads it
            spans = DeviceDeploymentRow
            history = (
                select(
                    spans.device_id,
                    spans.configurations,
                    spans.succeeded_at,
                    DeploymentContentRow.content,
                )
                .outerjoin(
                    DeploymentContentRow,
                    DeploymentContentRow.content_hash == DeviceDeploymentRow.content_hash,
                )
                .where(DeviceDeploymentRow.device_id.in_(chunk))
                .order_by(DeviceDeploymentRow.id.desc())
            )
            for device_id, configurations, succeeded_at, content in conn.execute(history):
                if device_id in docs:
                    span = _Span(configurations, succeeded_at, content or {})
                    docs[device_id].history.append(span)
        return docs

    def _lock(self, conn: Connection, chunk: list[str]) -> None:
        if self.db.dialect == "postgresql":
            stmt = (
                select(DeviceRow.device_id)
                .where(DeviceRow.device_id.in_(chunk))
                .order_by(DeviceRow.device_id)
                .with_for_update()
            )
            conn.execute(stmt).all()

    # ------------------------------------------------------------------ acting
    def _create_missing_modules(self, plans: list[DevicePlan]) -> None:
        for plan in plans:
            for module_id in plan.missing:
                try:
                    self.registry.create_module(plan.device_id, module_id, {"managedBy": "iotEdge"})
                except HubError as exc:  # a racing creator, or an id the registry refuses
                    log.info("module %s/%s not created: %s", plan.device_id, module_id, exc)

    def _write(self, conn: Connection, plans: list[DevicePlan]) -> list[Any]:
        events: list[Any] = []
        now = utc_now()
        for plan in plans:
            agent_version = plan.agent_desired_version
            for module_id in write_order(plan.writes):
                if module_id in plan.missing:
                    continue  # its identity could not be created; retried on the next pass
                write = TwinWrite(
                    plan.device_id,
                    None if module_id == DEVICE_TWIN else module_id,
                    None,
                    plan.writes[module_id],
                    replace=module_id != DEVICE_TWIN,
                )
                result, write_events = self.twins.apply_in(conn, write)
                events += write_events
                if module_id == EDGE_AGENT:
                    agent_version = result["properties"]["desired"]["$version"]
            if plan.statuses != plan.current_statuses:
                conn.execute(
                    update(TwinRow)
                    .where(
                        and_(
                            TwinRow.device_id == plan.device_id,
                            TwinRow.module_id.in_(_CONFIG_TWINS),
                        )
                    )
                    .values(configurations=plan.statuses or None)
                )
            for module_id, patch in sorted(plan.module_patches.items()):
                write = TwinWrite(plan.device_id, module_id, None, patch)
                events += self.twins.apply_in(conn, write)[1]
            for module_id, module_statuses in plan.module_statuses.items():
                if module_statuses != plan.current_module_statuses.get(module_id, {}):
                    conn.execute(
                        update(TwinRow)
                        .where(TwinRow.device_id == plan.device_id, TwinRow.module_id == module_id)
                        .values(configurations=module_statuses or None)
                    )
            if plan.target is not None and plan.writes:
                _record_history(conn, plan, agent_version, now)
        return events


def _plan_module_twins(plan: DevicePlan, doc: _DeviceDocs, module_views: list[_View]) -> None:
    """Module twin configurations (``moduleContent``): conditions over each module twin."""
    for module_id, twin in doc.twins.items():
        if module_id in (DEVICE_TWIN, EDGE_AGENT, "$edgeHub"):
            continue
        current = dict(twin.get("configurations") or {})
        plan.current_module_statuses[module_id] = current
        if not module_views and not current:
            continue
        queryable = {**twin, "$version": twin["version"]}
        matching = [
            v for v in module_views if v.condition is None or matches(v.condition, queryable)
        ]
        selection = choose(v.candidate for v in matching if eligible(v.config, plan.device_id))
        plan.module_statuses[module_id] = statuses((v.candidate for v in matching), selection)
        if selection.base is not None:
            patch = _device_patch(twin["properties"]["desired"], selection)
            if patch:
                plan.module_patches[module_id] = patch


def _plan_device(
    device_id: str,
    doc: _DeviceDocs,
    views: list[_View],
    device_views: list[_View],
    rolled_back: set[str],
) -> DevicePlan:
    device_twin = doc.twins[DEVICE_TWIN]
    queryable = {**device_twin, "$version": device_twin["version"]}
    is_edge = bool(device_twin.get("capabilities", {}).get("iotEdge"))
    pool = views if is_edge else device_views
    if is_edge:
        pool = pool + device_views
    matching = [v for v in pool if v.condition is None or matches(v.condition, queryable)]
    edge_matching = [v for v in matching if v.config.kind == "modules"]
    device_matching = [v for v in matching if v.config.kind == "device"]
    edge_selection = choose(v.candidate for v in edge_matching if eligible(v.config, device_id))
    device_selection = choose(v.candidate for v in device_matching if eligible(v.config, device_id))
    selection = Selection(edge_selection.base, edge_selection.layers)
    result_statuses = statuses((v.candidate for v in edge_matching), edge_selection)
    result_statuses.update(statuses((v.candidate for v in device_matching), device_selection))
    target: dict[str, dict[str, Any]] | None = None
    if is_edge:
        if selection.base is not None:
            target = merge(selection)
        else:
            target = _rollback_target(doc.history, rolled_back)
    plan = DevicePlan(
        device_id=device_id,
        statuses=result_statuses,
        selection=selection,
        target=target,
        current_statuses=dict(device_twin.get("configurations") or {}),
    )
    agent_twin = doc.twins.get(EDGE_AGENT)
    if agent_twin is not None:
        plan.agent_desired_version = agent_twin["properties"]["desired"]["$version"]
    current = {m: t["properties"]["desired"] for m, t in doc.twins.items() if m != DEVICE_TWIN}
    if target is not None:
        plan.writes = changed_twins(current, target)
        plan.missing = [m for m in plan.writes if m not in doc.twins]
    if device_selection.base is not None:
        patch = _device_patch(device_twin["properties"]["desired"], device_selection)
        if patch:
            plan.writes[DEVICE_TWIN] = patch
    return plan


def _device_patch(desired: Mapping[str, Any], selection: Selection) -> dict[str, Any]:
    """A merge patch setting the dotted paths of a device twin configuration (only changes)."""
    target = merge(selection).get("", {})
    current = strip_metadata(desired)
    patch: dict[str, Any] = {}
    for key, value in target.items():
        if current.get(key) != value:
            patch[key] = value
    return patch


def _rollback_target(
    history: list[_Span], rolled_back: set[str]
) -> dict[str, dict[str, Any]] | None:
    """After a rollback, where nothing else targets the device: what it last ran successfully.

    Only when its newest deployment involves a rolled-back configuration; a device that merely
    left every target keeps its content, as in IoT Hub.
    """
    if not history or not rolled_back:
        return None
    newest_ids = {entry["id"] for entry in history[0].configurations}
    if not newest_ids & rolled_back:
        return None
    for span in history:
        ids = {entry["id"] for entry in span.configurations}
        if span.succeeded_at is not None and not ids & rolled_back and span.content:
            return {m: dict(d) for m, d in span.content.items()}
    return None


def _record_history(
    conn: Connection, plan: DevicePlan, agent_version: int | None, now: datetime
) -> None:
    """Close the device's open history span and open one for what it was just given.

    Keeps the newest ``MAX_HISTORY`` spans of the device, and always its newest successful one
    (the rollback target).
    """
    assert plan.target is not None
    digest = content_hash(plan.target)
    conn.execute(_insert_content(conn).values(content_hash=digest, content=plan.target))
    conn.execute(
        update(DeviceDeploymentRow)
        .where(
            DeviceDeploymentRow.device_id == plan.device_id,
            DeviceDeploymentRow.ended_at.is_(None),
        )
        .values(ended_at=now)
    )
    conn.execute(
        insert(DeviceDeploymentRow).values(
            device_id=plan.device_id,
            configurations=plan.history_key(),
            content_hash=digest,
            modules=list(deployment_modules(plan.target_sections())),
            desired_version=agent_version,
            started_at=now,
        )
    )
    _prune_history(conn, plan.device_id)


def _insert_content(conn: Connection) -> Any:
    """INSERT of a content row that does nothing when the hash is stored already."""
    table = DeploymentContentRow
    if conn.dialect.name == "postgresql":
        return pg_insert(table).on_conflict_do_nothing(index_elements=["content_hash"])
    return sqlite_insert(table).on_conflict_do_nothing(index_elements=["content_hash"])


def _prune_history(conn: Connection, device_id: str) -> None:
    spans = DeviceDeploymentRow
    keep_newest = (
        select(spans.id)
        .where(spans.device_id == device_id)
        .order_by(spans.id.desc())
        .limit(MAX_HISTORY)
    )
    last_success = (
        select(spans.id)
        .where(spans.device_id == device_id, spans.succeeded_at.is_not(None))
        .order_by(spans.id.desc())
        .limit(1)
    )
    kept = set(conn.execute(keep_newest).scalars()) | set(conn.execute(last_success).scalars())
    if len(kept) >= MAX_HISTORY:
        conn.execute(delete(spans).where(spans.device_id == device_id, spans.id.not_in(kept)))
