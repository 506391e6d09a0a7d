"""Writes assignment results to devices: module twins, ``configurations`` status, history.

``Assigner.assign(device_ids)`` decides with ``cloud_hub.deployments.assignment`` and acts in
batches of ``BATCH`` devices. A batch is one write transaction that holds the devices' row locks on
PostgreSQL (SQLite's single writer serializes it): it loads their twins, decides, creates missing
module identities and writes, so two hub processes never both write one device (the second finds
the twins already at their target and writes nothing); the same holds for the batches of one pass,
which on PostgreSQL are written ``PG_WRITERS`` at a time, so that the hub plans one batch while
the server writes another's rows. Writes are grouped per batch (one statement
for all module twin replacements, one for the statuses, one for the history, two for new module
identities; see ``cloud_hub.bulk_sql``); each distinct selection of configurations is merged once
per pass, and its documents are encoded and given their ``$metadata`` once per batch. A batch
reads only what deciding needs: module twins without their reported properties (unless module
twin configurations match on them), device twins as ids, tags, capabilities, version and statuses
when only edge deployments with conditions on those decide. Twin events are published after the
commit, which pushes desired patches to agents.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cloud_hub.bulk_sql import encode_json, insert_rows, update_rows
from cloud_hub.db import Database
from cloud_hub.deployments.assignment import (
    DESIRED,
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
from cloud_hub.deployments.store import StoredConfiguration
from cloud_hub.deployments.tables import DeploymentContentRow, DeviceDeploymentRow
from cloud_hub.errors import HubError
from cloud_hub.events import EventBus
from cloud_hub.identity import check_id
from cloud_hub.models import DEVICE_TWIN, DeviceRow, TwinRow
from cloud_hub.query import Condition, QueryError, matches, parse_condition
from cloud_hub.query.syntax import path_roots
from cloud_hub.registry import Registry
from cloud_hub.twins import Twins, TwinWrite, twin_parts, twin_select
from edgefleet.utctime import utc_now

log = logging.getLogger(__name__)

EDGE_AGENT = "$edgeAgent"
BATCH = 200
#: batches written side by side on PostgreSQL: one plans while the server writes the other's rows
#: (SQLite has one writer, so there they run one after the other)
PG_WRITERS = 2
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
    merged: _Merged | None  # what the device should run (None: leave its modules alone)
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


@dataclass(frozen=True)
class _Span:
    configurations: list[dict[str, str]]
    succeeded_at: datetime | None
    content: dict[str, Any]


@dataclass
class _DeviceDocs:
    twins: dict[str, dict[str, Any]]  # module id ("" for the device) -> twin JSON (see _load)
    rows: dict[str, Mapping[str, Any]]  # module id -> the twin's own columns (for the writes)
    history: list[_Span]  # newest first; loaded only when a rollback may need it


@dataclass(frozen=True)
class _Merged:
    """What a selection gives, computed once per pass for every device with that selection."""

    target: dict[str, dict[str, Any]]
    digest: str
    history_key: list[dict[str, str]]
    modules: list[str]


class _MergeCache:
    def __init__(self) -> None:
        self._by_key: dict[tuple[str, ...], _Merged] = {}
        self._lock = threading.Lock()  # batches may plan side by side

    def get(self, selection: Selection) -> _Merged:
        key = tuple(c.config_id for c in selection.chosen)
        with self._lock:
            return self._get(key, selection)

    def _get(self, key: tuple[str, ...], selection: Selection) -> _Merged:
        merged = self._by_key.get(key)
        if merged is None:
            target = merge(selection)
            sections = {m: {DESIRED: d} for m, d in target.items()}
            merged = _Merged(
                target=target,
                digest=content_hash(target),
                history_key=[
                    {"id": c.config_id, "contentHash": content_hash(c.sections)}
                    for c in selection.chosen
                ],
                modules=list(deployment_modules(sections)),
            )
            self._by_key[key] = merged
        return merged


class Assigner:
    def __init__(self, db: Database, twins: Twins, registry: Registry, bus: EventBus) -> None:
        self.db = db
        self.twins = twins
        self.registry = registry
        self.bus = bus

    def assign(self, device_ids: Iterable[str], configs: Sequence[StoredConfiguration]) -> int:
        """Bring these devices to their assignment; returns how many devices changed."""
        all_views = _views(configs)
        views = _Views(
            edge=[v for v in all_views if v.config.kind == "modules"],
            device=[v for v in all_views if v.config.kind == "device"],
            module=[v for v in all_views if v.config.kind == "module"],
            rolled_back={
                c.config_id
                for c in configs
                if c.rollout_state is not None and c.rollout_state.state == "rolledBack"
            },
            merged=_MergeCache(),
        )
        ids = sorted(set(device_ids))
        chunks = [ids[start : start + BATCH] for start in range(0, len(ids), BATCH)]
        if self.db.dialect != "postgresql" or len(chunks) < 2:
            return sum(self._assign_batch(chunk, views) for chunk in chunks)
        with ThreadPoolExecutor(PG_WRITERS, thread_name_prefix="assign") as pool:
            return sum(pool.map(lambda chunk: self._assign_batch(chunk, views), chunks))

    def _assign_batch(self, chunk: list[str], views: _Views) -> int:
        """One batch in one transaction; its events after the commit. Batches of one pass lock
        disjoint devices, so they may run side by side as two hub processes' batches do."""
        with _no_cycle_collection(), self.db.write_conn() as conn:
            self._lock(conn, chunk)
            plans, docs = self._plan(conn, chunk, views)
            events = self._write(conn, plans, docs)
        for event in events:
            self.bus.publish(event)
        return sum(1 for p in plans if p.changes_anything())

    # ------------------------------------------------------------------ deciding
    def _plan(
        self, conn: Connection, chunk: list[str], views: _Views
    ) -> tuple[list[DevicePlan], dict[str, _DeviceDocs]]:
        docs = self._load(conn, chunk, views)
        plans = []
        for device_id in chunk:
            doc = docs.get(device_id)
            if doc is None or DEVICE_TWIN not in doc.twins:
                continue  # deleted meanwhile
            plan = _plan_device(device_id, doc, views)
            _plan_module_twins(plan, doc, views.module)
            plans.append(plan)
        return plans, docs

    def _load(self, conn: Connection, chunk: list[str], views: _Views) -> dict[str, _DeviceDocs]:
        """The devices' twins, as much of them as deciding reads: module twins whole only when
        module twin configurations match on them, device twins whole unless ``views.light``."""
        docs: dict[str, _DeviceDocs] = {}
        whole_modules = bool(views.module)
        if views.light:
            for row in conn.execute(_DEVICE_LIGHT.where(TwinRow.device_id.in_(chunk))):
                doc = docs.setdefault(row.device_id, _DeviceDocs({}, {}, []))
                doc.twins[DEVICE_TWIN] = _light_device_twin(row)
                doc.rows[DEVICE_TWIN] = {"device_id": row.device_id, "module_id": DEVICE_TWIN}
        else:
            stmt = twin_select().where(TwinRow.device_id.in_(chunk))
            if not whole_modules:
                stmt = stmt.where(TwinRow.module_id == DEVICE_TWIN)
            for row in conn.execute(stmt):
                columns, twin = twin_parts(row)
                doc = docs.setdefault(twin["deviceId"], _DeviceDocs({}, {}, []))
                module_id = twin.get("moduleId", DEVICE_TWIN)
                doc.twins[module_id] = twin
                doc.rows[module_id] = columns
        if not whole_modules:
            for row in conn.execute(_MODULE_DESIRED.where(TwinRow.device_id.in_(chunk))):
                module_doc = docs.get(row.device_id)
                if module_doc is not None:
                    module_doc.rows[row.module_id] = values = row._asdict()
                    module_doc.twins[row.module_id] = _module_twin(values)
        if views.rolled_back:  # only a rollback reads the history
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
    def _write(
        self, conn: Connection, plans: list[DevicePlan], docs: dict[str, _DeviceDocs]
    ) -> list[Any]:
        """Every write of a batch, a few statements for the whole batch."""
        events: list[Any] = []
        replacements: list[tuple[Mapping[str, Any], dict[str, Any]]] = []
        statuses_rows: list[dict[str, Any]] = []
        spans: list[DevicePlan] = []
        missing = [(p.device_id, m) for p in plans for m in p.missing]
        events += self.registry.add_modules_in(conn, missing, "iotEdge")
        for device_id, module_id in missing:  # a fresh twin: desired version 1, nothing set
            docs[device_id].rows[module_id] = _fresh_twin_columns(device_id, module_id)
        for plan in plans:
            doc = docs[plan.device_id]
            for module_id in write_order(plan.writes):
                if module_id == DEVICE_TWIN:
                    patch = TwinWrite(plan.device_id, None, None, plan.writes[module_id])
                    events += self.twins.apply_in(conn, patch)[1]
                    continue
                replacements.append((doc.rows[module_id], plan.writes[module_id]))
                if module_id == EDGE_AGENT:
                    plan.agent_desired_version = doc.rows[module_id]["desired_version"] + 1
            if plan.statuses != plan.current_statuses:
                for module_id in _CONFIG_TWINS:
                    if module_id in doc.rows:
                        statuses_rows.append(_status_row(plan.device_id, module_id, plan.statuses))
            for module_id, patch_doc in sorted(plan.module_patches.items()):
                patch = TwinWrite(plan.device_id, module_id, None, patch_doc)
                events += self.twins.apply_in(conn, patch)[1]
            for module_id, module_statuses in plan.module_statuses.items():
                if module_statuses != plan.current_module_statuses.get(module_id, {}):
                    statuses_rows.append(_status_row(plan.device_id, module_id, module_statuses))
            if plan.merged is not None and plan.writes:
                spans.append(plan)
        events += self.twins.replace_desired_in(conn, replacements)
        update_rows(conn, _TWIN_TABLE, _TWIN_KEY, statuses_rows, _STATUS_JSON)
        _record_history(conn, spans, utc_now())
        return events


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = False


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """No cyclic garbage collection during a batch: it allocates many small objects (documents,
    rows), which would set off full collections over everything the process holds, for about a
    tenth of the batch's time; what it leaves is collected after. Counted, so that batches
    running side by side turn it back on only when the last one ends."""
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                gc.enable()


@dataclass
class _Views:
    edge: list[_View]
    device: list[_View]
    module: list[_View]
    rolled_back: set[str]
    merged: _MergeCache

    @property
    def light(self) -> bool:
        """Whether the light device twin decides as the whole one would: only edge deployments,
        whose target conditions read nothing else."""
        if self.device or self.module:
            return False
        for view in self.edge:
            roots = set() if view.condition is None else path_roots(view.condition.expr)
            if roots is None or not roots <= _LIGHT_ROOTS:
                return False
        return True


#: the paths of a device twin that ``_light_device_twin`` shows as ``twin_json`` does
_LIGHT_ROOTS = frozenset(
    {"deviceId", "tags", "capabilities", "version", "$version", "configurations"}
)
_DEVICE_LIGHT = (
    select(
        TwinRow.device_id, TwinRow.tags, TwinRow.version, TwinRow.configurations, DeviceRow.iot_edge
    )
    .join(DeviceRow, DeviceRow.device_id == TwinRow.device_id)
    .where(TwinRow.module_id == DEVICE_TWIN)
)


def _light_device_twin(row: Any) -> dict[str, Any]:
    """The ``_LIGHT_ROOTS`` of a device twin's JSON (what ``_plan_device`` reads of it when
    there are no device twin configurations)."""
    twin: dict[str, Any] = {
        "deviceId": row.device_id,
        "version": row.version,
        "tags": row.tags or {},
        "capabilities": {"iotEdge": row.iot_edge},
    }
    if row.configurations:
        twin["configurations"] = row.configurations
    return twin


_TWIN_TABLE: Table = TwinRow.__table__  # type: ignore[assignment]
_HISTORY_TABLE: Table = DeviceDeploymentRow.__table__  # type: ignore[assignment]
_TWIN_KEY = ("device_id", "module_id")
_STATUS_JSON = ("configurations",)


_MODULE_DESIRED = select(
    TwinRow.device_id,
    TwinRow.module_id,
    TwinRow.version,
    TwinRow.desired,
    TwinRow.desired_version,
    TwinRow.configurations,
).where(TwinRow.module_id != DEVICE_TWIN)


def _module_twin(columns: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a module twin's JSON that deciding reads (as ``twin_json`` shows them)."""
    twin: dict[str, Any] = {
        "deviceId": columns["device_id"],
        "moduleId": columns["module_id"],
        "version": columns["version"],
        "properties": {
            "desired": {**(columns["desired"] or {}), "$version": columns["desired_version"]}
        },
    }
    if columns["configurations"]:
        twin["configurations"] = columns["configurations"]
    return twin


def _status_row(device_id: str, module_id: str, value: dict[str, Any]) -> dict[str, Any]:
    """A row of the statuses UPDATE: JSON text, and JSON null for no statuses (as it was)."""
    return {
        "device_id": device_id,
        "module_id": module_id,
        "configurations": encode_json(value or None),
    }


def _valid_module_id(module_id: str) -> bool:
    try:
        check_id(module_id, "moduleId")
    except HubError:
        return False
    return not module_id.startswith("$")


def _fresh_twin_columns(device_id: str, module_id: str) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "module_id": module_id,
        "desired": {},
        "desired_version": 1,
        "version": 1,
    }


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


def _plan_device(device_id: str, doc: _DeviceDocs, views: _Views) -> DevicePlan:
    device_twin = doc.twins[DEVICE_TWIN]
    queryable = {**device_twin, "$version": device_twin["version"]}
    is_edge = bool(device_twin.get("capabilities", {}).get("iotEdge"))
    pool = views.edge + views.device if is_edge else views.device
    matching = [v for v in pool if v.condition is None or matches(v.condition, queryable)]
    edge_matching = [v for v in matching if v.config.kind == "modules"]
    device_matching = [v for v in matching if v.config.kind == "device"]
    edge_selection = choose(v.candidate for v in edge_matching if eligible(v.config, device_id))
    device_selection = choose(v.candidate for v in device_matching if eligible(v.config, device_id))
    selection = Selection(edge_selection.base, edge_selection.layers)
    result_statuses = statuses((v.candidate for v in edge_matching), edge_selection)
    result_statuses.update(statuses((v.candidate for v in device_matching), device_selection))
    merged: _Merged | None = None
    if is_edge:
        if selection.base is not None:
            merged = views.merged.get(selection)
        else:
            merged = _rollback_target(doc.history, views.rolled_back)
    plan = DevicePlan(
        device_id=device_id,
        statuses=result_statuses,
        selection=selection,
        merged=merged,
        current_statuses=dict(device_twin.get("configurations") or {}),
    )
    agent_twin = doc.twins.get(EDGE_AGENT)
    if agent_twin is not None:
        plan.agent_desired_version = agent_twin["properties"]["desired"]["$version"]
    current = {m: t["properties"]["desired"] for m, t in doc.twins.items() if m != DEVICE_TWIN}
    if merged is not None:
        plan.writes = changed_twins(current, merged.target)
        # every module of the deployment gets an identity (and twin), as IoT Hub does
        absent = sorted((set(plan.writes) | set(merged.modules)) - set(doc.twins))
        plan.missing = [m for m in absent if _valid_module_id(m)]
        for module_id in set(absent) - set(plan.missing):
            log.warning("device %s: module id %r is not valid; not deployed", device_id, module_id)
            plan.writes.pop(module_id, None)
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


def _rollback_target(history: list[_Span], rolled_back: set[str]) -> _Merged | None:
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
            target = {m: dict(d) for m, d in span.content.items()}
            sections = {m: {DESIRED: d} for m, d in target.items()}
            return _Merged(
                target=target,
                digest=content_hash(target),
                history_key=[],
                modules=list(deployment_modules(sections)),
            )
    return None


def _record_history(conn: Connection, plans: list[DevicePlan], now: datetime) -> None:
    """Close the devices' open history spans and open one each for what it was just given."""
    if not plans:
        return
    contents = {p.merged.digest: p.merged.target for p in plans if p.merged is not None}
    for digest, target in contents.items():
        conn.execute(_insert_content(conn).values(content_hash=digest, content=target))
    conn.execute(
        update(DeviceDeploymentRow)
        .where(
            DeviceDeploymentRow.device_id.in_([p.device_id for p in plans]),
            DeviceDeploymentRow.ended_at.is_(None),
        )
        .values(ended_at=now)
    )
    rows = []
    for plan in plans:
        assert plan.merged is not None
        rows.append(
            {
                "device_id": plan.device_id,
                "configurations": plan.merged.history_key,
                "content_hash": plan.merged.digest,
                "modules": plan.merged.modules,
                "desired_version": plan.agent_desired_version,
                "started_at": now,
            }
        )
    insert_rows(conn, _HISTORY_TABLE, rows)


def _insert_content(conn: Connection) -> Any:
    """INSERT of a content row that does nothing when the hash is stored already."""
    table = DeploymentContentRow
    if conn.dialect.name == "postgresql":
        return pg_insert(table).on_conflict_do_nothing(index_elements=["content_hash"])
    return sqlite_insert(table).on_conflict_do_nothing(index_elements=["content_hash"])
