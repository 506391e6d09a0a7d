"""Device and module twins (service layer): read, merge-patch, replace; events after commit."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    Table,
    Text,
    Update,
    bindparam,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from cloud_hub import events
from cloud_hub.bulk_sql import encode_json, update_rows
from cloud_hub.db import Database
from cloud_hub.errors import (
    DeviceNotFound,
    HubError,
    InvalidInput,
    ModuleNotFound,
    NotFound,
    PreconditionFailed,
)
from cloud_hub.events import EventBus
from cloud_hub.identity import etag_matches, twin_etag
from cloud_hub.models import DEVICE_TWIN, DeviceRow, ModuleRow, TwinRow
from cloud_hub.twindoc import (
    MAX_PROPERTIES_BYTES,
    MAX_TAGS_BYTES,
    build_metadata,
    check_size,
    iso,
    merge_patch,
    replacement_patch,
    strip_nulls,
    validate_patch,
)
from edgefleet.utctime import utc_now

log = logging.getLogger(__name__)


def twin_json(
    twin: Mapping[str, Any], device: Mapping[str, Any], module: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The IoT Hub twin JSON of a device (module is None) or module twin (rows as mappings)."""
    ident = module if module is not None else device
    doc: dict[str, Any] = {"deviceId": twin["device_id"]}
    if twin["module_id"] != DEVICE_TWIN:
        doc["moduleId"] = twin["module_id"]
    doc.update(
        {
            "etag": twin_etag(twin["version"]),
            "deviceEtag": device["etag"],
            "status": device["status"],
            "statusReason": device["status_reason"],
            "statusUpdateTime": iso(device["status_updated_time"]),
            "connectionState": ident["connection_state"],
            "lastActivityTime": iso(ident["last_activity_time"]),
            "cloudToDeviceMessageCount": ident["cloud_to_device_message_count"],
            "authenticationType": ident["auth_type"],
            "x509Thumbprint": {
                "primaryThumbprint": ident["primary_thumbprint"],
                "secondaryThumbprint": ident["secondary_thumbprint"],
            },
            "modelId": "",
            "version": twin["version"],
            "tags": twin["tags"] or {},
            "properties": {
                "desired": {
                    **(twin["desired"] or {}),
                    "$metadata": twin["desired_meta"] or {},
                    "$version": twin["desired_version"],
                },
                "reported": {
                    **(twin["reported"] or {}),
                    "$metadata": twin["reported_meta"] or {},
                    "$version": twin["reported_version"],
                },
            },
        }
    )
    if twin["module_id"] == DEVICE_TWIN:
        doc["capabilities"] = {"iotEdge": device["iot_edge"]}
    if twin.get("configurations"):
        doc["configurations"] = twin["configurations"]
    return doc


def _not_found(device_id: str, module_id: str | None) -> NotFound:
    if module_id is None:
        return DeviceNotFound(f"device {device_id!r} not found", path="deviceId")
    return ModuleNotFound(f"module {device_id}/{module_id} not found", path="moduleId")


def _module_key(module_id: str | None) -> str:
    return DEVICE_TWIN if module_id is None else module_id


def _section(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    """body['properties'][name] (or body[name] for tags) checked to be an object when present."""
    if name == "tags":
        value = body.get("tags")
        path = "tags"
    else:
        props = body.get("properties")
        if props is None:
            return None
        if not isinstance(props, dict):
            raise InvalidInput("properties must be a JSON object", path="properties")
        value = props.get(name)
        path = f"properties.{name}"
    if value is None:
        return None
    validate_patch(value, path)
    return {k: v for k, v in value.items() if not k.startswith("$")} if name != "tags" else value


@dataclass(frozen=True)
class TwinWrite:
    """One PATCH/PUT of a twin's tags and desired properties (sections already validated)."""

    device_id: str
    module_id: str | None
    tags_patch: dict[str, Any] | None
    desired_patch: dict[str, Any] | None
    if_match: str | None = None
    replace: bool = False


def twin_write_sections(
    body: Any, replace: bool
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(tags, desired) of a PATCH (``replace`` False) or PUT body, validated (InvalidInput)."""
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object", path="body")
    tags = _section(body, "tags")
    desired = _section(body, "desired")
    if replace:
        return tags or {}, desired or {}
    return tags, desired


class _Rec(dict[str, Any]):
    """A table row as a dict with attribute access (what twin_json reads)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


_TWINS: Table = TwinRow.__table__  # type: ignore[assignment]
_DEVICES: Table = DeviceRow.__table__  # type: ignore[assignment]
_MODULES: Table = ModuleRow.__table__  # type: ignore[assignment]
_SELECT_TWIN = select(_TWINS).where(
    _TWINS.c.device_id == bindparam("d"), _TWINS.c.module_id == bindparam("m")
)
_SELECT_TWIN_LOCKED = _SELECT_TWIN.with_for_update()
_MODULES_OUTER = _MODULES.alias("m")
_N_TWIN = len(_TWINS.c)
# Only the identity columns the twin JSON shows (no keys): fewer columns to describe and convert.
_IDENT_KEYS = [
    "auth_type",
    "primary_thumbprint",
    "secondary_thumbprint",
    "connection_state",
    "last_activity_time",
    "cloud_to_device_message_count",
]
_DEVICE_KEYS = ["etag", "status", "status_reason", "status_updated_time", "iot_edge", *_IDENT_KEYS]
_MODULE_KEYS = ["module_id", *_IDENT_KEYS]  # module_id is NULL for a device twin
_N_DEVICE = len(_DEVICE_KEYS)
_TWIN_KEYS = [c.key for c in _TWINS.c]


def twin_select() -> Select[Any]:
    """SELECT twins joined with their device (and module) rows; rows go to ``twin_from_row``.

    Filter with the ``TwinRow`` / ``DeviceRow`` columns (e.g. a query prefilter).
    """
    return (
        select(
            _TWINS,
            *[_DEVICES.c[key] for key in _DEVICE_KEYS],
            *[_MODULES_OUTER.c[key] for key in _MODULE_KEYS],
        )
        .join(_DEVICES, _DEVICES.c.device_id == _TWINS.c.device_id)
        .outerjoin(
            _MODULES_OUTER,
            (_MODULES_OUTER.c.device_id == _TWINS.c.device_id)
            & (_MODULES_OUTER.c.module_id == _TWINS.c.module_id),
        )
    )


def twin_from_row(row: Any) -> dict[str, Any]:
    """The twin JSON of one ``twin_select`` row."""
    return twin_json(*_split_row(row))


def twin_parts(row: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the twin's own columns, its twin JSON) of one ``twin_select`` row."""
    twin, device, module = _split_row(row)
    return twin, twin_json(twin, device, module)


def _split_row(row: Any) -> tuple[_Rec, _Rec, _Rec | None]:
    values = tuple(row)
    twin = _Rec(zip(_TWIN_KEYS, values[:_N_TWIN], strict=True))
    device = _Rec(zip(_DEVICE_KEYS, values[_N_TWIN : _N_TWIN + _N_DEVICE], strict=True))
    module_values = values[_N_TWIN + _N_DEVICE :]
    module = None
    if module_values[0] is not None:
        module = _Rec(zip(_MODULE_KEYS, module_values, strict=True))
    return twin, device, module


# One statement for a twin with its device (and module) row: a single round trip per read.
_SELECT_FULL = twin_select().where(
    _TWINS.c.device_id == bindparam("d"), _TWINS.c.module_id == bindparam("m")
)
_SELECT_FULL_LOCKED = _SELECT_FULL.with_for_update(of=_TWINS)
# Every twin of a write batch in one statement, in key order.
# SQLite: it finds the rows of an IN list of (device, module) pairs only by scanning the table;
# the plain IN on the device ids lets it search the primary key instead.
_SELECT_BATCH_SQLITE = (
    twin_select()
    .where(
        _TWINS.c.device_id.in_(bindparam("ds", expanding=True)),
        tuple_(_TWINS.c.device_id, _TWINS.c.module_id).in_(bindparam("keys", expanding=True)),
    )
    .order_by(_TWINS.c.device_id, _TWINS.c.module_id)
)
# PostgreSQL: the row locks are taken in key order, so hub processes writing overlapping twins
# do not deadlock; the keys come as two arrays, so the statement's text is the same for every
# batch size (prepared once by the driver, planned once by the server; an IN list is planned
# per size).
_PG_KEYS = (
    func.unnest(bindparam("ds", type_=ARRAY(Text)), bindparam("ms", type_=ARRAY(Text)))
    .table_valued("d", "m")
    .render_derived()
)
_SELECT_BATCH_PG = (
    twin_select()
    .where(tuple_(_TWINS.c.device_id, _TWINS.c.module_id).in_(select(_PG_KEYS.c.d, _PG_KEYS.c.m)))
    .order_by(_TWINS.c.device_id, _TWINS.c.module_id)
    .with_for_update(of=_TWINS)
)


_MUTABLE = (
    "tags",
    "desired",
    "desired_meta",
    "desired_version",
    "reported",
    "reported_meta",
    "reported_version",
    "version",
    "updated_at",
    "configurations",
)


@functools.cache
def _update_stmt(columns: tuple[str, ...]) -> Update:
    """A reusable UPDATE of just these columns (only changed JSON documents are re-encoded)."""
    assert set(columns) <= set(_MUTABLE)
    return (
        update(_TWINS)
        .where(_TWINS.c.device_id == bindparam("d"), _TWINS.c.module_id == bindparam("m"))
        .values({name: bindparam(f"p_{name}") for name in columns})
    )


_TWIN_KEY = ("device_id", "module_id")


def _twin_changes(
    twin: Mapping[str, Any], write: TwinWrite, now: datetime, stamp: str
) -> tuple[dict[str, Any], list[Any]]:
    """(the changed columns, the events) of one write on a twin row; raises a HubError (412,
    a size limit) before anything is decided, and leaves ``twin`` as it is."""
    device_id, module_id = write.device_id, write.module_id
    tags_patch, desired_patch, replace = write.tags_patch, write.desired_patch, write.replace
    if not etag_matches(write.if_match, twin_etag(twin["version"])):
        raise PreconditionFailed("twin etag does not match If-Match")
    changes: dict[str, Any] = {}
    changed: list[Any] = []
    if tags_patch is not None:
        old_tags = twin["tags"] or {}
        if replace:
            new_tags = strip_nulls(tags_patch)
        else:
            new_tags, _ = merge_patch(old_tags, {}, tags_patch, stamp, 0)
        check_size(new_tags, "tags", MAX_TAGS_BYTES)
        if new_tags != old_tags:
            changes["tags"] = new_tags
            changed.append(events.TwinTagsChanged(device_id, module_id, new_tags))
    if desired_patch is not None and (desired_patch or replace):
        version = twin["desired_version"] + 1
        old = twin["desired"] or {}
        if replace:
            new_desired = strip_nulls(desired_patch)
            new_meta = build_metadata(new_desired, stamp, version)
            pushed = replacement_patch(old, new_desired)
        else:
            new_desired, new_meta = merge_patch(
                old, twin["desired_meta"] or {}, desired_patch, stamp, version
            )
            pushed = desired_patch
        check_size(new_desired, "properties.desired", MAX_PROPERTIES_BYTES)
        changes.update(desired=new_desired, desired_meta=new_meta, desired_version=version)
        changed.append(events.TwinDesiredChanged(device_id, module_id, pushed, version))
    if changes:
        changes.update(version=twin["version"] + 1, updated_at=now)
    return changes, changed


class Twins:
    """Twin operations. The hot paths use SQLAlchemy Core (one SELECT, one UPDATE per patch)."""

    def __init__(self, db: Database, bus: EventBus) -> None:
        self.db = db
        self.bus = bus

    def _load(self, conn: Connection, device_id: str, module_id: str | None, *, lock: bool) -> _Rec:
        stmt = _SELECT_TWIN_LOCKED if lock and self.db.dialect == "postgresql" else _SELECT_TWIN
        row = conn.execute(stmt, {"d": device_id, "m": _module_key(module_id)}).first()
        if row is None:
            raise _not_found(device_id, module_id)
        return _Rec(row._mapping)

    def _load_full(
        self, conn: Connection, device_id: str, module_id: str | None, *, lock: bool
    ) -> tuple[_Rec, _Rec, _Rec | None]:
        """The twin row with its device and module rows (locks only the twin row)."""
        stmt = _SELECT_FULL_LOCKED if lock and self.db.dialect == "postgresql" else _SELECT_FULL
        row = conn.execute(stmt, {"d": device_id, "m": _module_key(module_id)}).first()
        if row is None:
            raise _not_found(device_id, module_id)
        return _split_row(row)

    def _save(self, conn: Connection, twin: _Rec, changes: dict[str, Any]) -> None:
        twin.update(changes)
        params = {f"p_{name}": value for name, value in changes.items()}
        stmt = _update_stmt(tuple(sorted(changes)))
        conn.execute(stmt, {"d": twin.device_id, "m": twin.module_id, **params})

    def get_twin(self, device_id: str, module_id: str | None = None) -> dict[str, Any]:
        with self.db.read_conn() as conn:
            return twin_json(*self._load_full(conn, device_id, module_id, lock=False))

    def patch_twin(
        self,
        device_id: str,
        module_id: str | None,
        body: dict[str, Any],
        if_match: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch tags and desired properties (the service-side PATCH /twins/{id})."""
        tags, desired = twin_write_sections(body, False)
        return self._update(TwinWrite(device_id, module_id, tags, desired, if_match))

    def replace_twin(
        self,
        device_id: str,
        module_id: str | None,
        body: dict[str, Any],
        if_match: str | None = None,
    ) -> dict[str, Any]:
        """Replace tags and desired properties (PUT /twins/{id}); reported is left alone."""
        tags, desired = twin_write_sections(body, True)
        return self._update(TwinWrite(device_id, module_id, tags, desired, if_match, True))

    def patch_desired(
        self,
        device_id: str,
        module_id: str | None,
        patch: dict[str, Any],
        if_match: str | None = None,
    ) -> dict[str, Any]:
        validate_patch(patch, "properties.desired")
        return self._update(TwinWrite(device_id, module_id, None, patch, if_match))

    def _update(self, write: TwinWrite) -> dict[str, Any]:
        """One twin write in its own transaction; events after the commit."""
        with self.db.write_conn() as conn:
            result, changed = self.apply_in(conn, write)
        for event in changed:
            self.bus.publish(event)
        return result

    def write_batch(self, writes: Sequence[TwinWrite]) -> list[dict[str, Any] | Exception]:
        """Apply several twin writes in one transaction (group commit); one outcome per write.

        A write that fails with a HubError (404, 412, a limit) changes nothing and the others
        commit; any other failure (a database error, a lock timeout) rolls the batch back and
        every write is retried alone in its own transaction. Events follow the commit, in order.
        An outcome is the twin JSON or the exception that write raised.
        """
        try:
            with self.db.batch_write_conn() as conn:
                outcomes, changed = self._batch_in(conn, writes)
        except Exception as exc:
            if len(writes) == 1:
                return [exc]
            log.info(
                "twin batch of %d rolled back; retrying one by one", len(writes), exc_info=True
            )
            return [self._write_alone(write) for write in writes]
        for event in changed:
            self.bus.publish(event)
        return outcomes

    def _batch_in(
        self, conn: Connection, writes: Sequence[TwinWrite]
    ) -> tuple[list[dict[str, Any] | Exception], list[Any]]:
        """The writes in the caller's transaction, a few statements for the whole batch: one
        SELECT (and lock) of every twin they name, the merges in Python in batch order (a twin
        written twice sees its first write), one UPDATE per set of changed columns. A single
        write takes the one-twin statements, whose SQL is compiled once (no IN list to expand)."""
        if len(writes) == 1:
            try:
                result, write_events = self.apply_in(conn, writes[0])
            except HubError as exc:
                return [exc], []
            return [result], write_events
        keys = sorted({(w.device_id, _module_key(w.module_id)) for w in writes})
        if self.db.dialect == "postgresql":
            stmt = _SELECT_BATCH_PG
            params: dict[str, Any] = {"ds": [k[0] for k in keys], "ms": [k[1] for k in keys]}
        else:
            stmt = _SELECT_BATCH_SQLITE
            params = {"keys": keys, "ds": sorted({k[0] for k in keys})}
        loaded: dict[tuple[str, str], tuple[_Rec, _Rec, _Rec | None]] = {}
        for row in conn.execute(stmt, params):
            twin_row = _split_row(row)
            loaded[(twin_row[0].device_id, twin_row[0].module_id)] = twin_row
        now = utc_now()
        stamp = iso(now) or ""
        outcomes: list[dict[str, Any] | Exception] = []
        changed: list[Any] = []
        dirty: dict[tuple[str, str], set[str]] = {}
        for write in writes:
            key = (write.device_id, _module_key(write.module_id))
            parts = loaded.get(key)
            try:
                if parts is None:
                    raise _not_found(write.device_id, write.module_id)
                twin, device, module = parts
                changes, write_events = _twin_changes(twin, write, now, stamp)
            except HubError as exc:  # raised before anything of this write was applied
                outcomes.append(exc)
                continue
            if changes:
                twin.update(changes)
                dirty.setdefault(key, set()).update(changes)
            outcomes.append(twin_json(twin, device, module))
            changed += write_events
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for key, columns in dirty.items():
            twin = loaded[key][0]
            names = tuple(sorted(columns))
            values = {"device_id": key[0], "module_id": key[1], **{n: twin[n] for n in names}}
            groups.setdefault(names, []).append(values)
        for rows in groups.values():
            update_rows(conn, _TWINS, _TWIN_KEY, rows)
        return outcomes, changed

    def _write_alone(self, write: TwinWrite) -> dict[str, Any] | Exception:
        try:
            return self._update(write)
        except Exception as exc:
            return exc

    def apply_in(self, conn: Connection, write: TwinWrite) -> tuple[dict[str, Any], list[Any]]:
        """One twin write inside the caller's transaction: (twin JSON, events to publish).

        Every check (existence, If-Match, limits) comes before the UPDATE, so a HubError leaves
        the transaction untouched.
        """
        now = utc_now()
        twin, device, module = self._load_full(conn, write.device_id, write.module_id, lock=True)
        changes, write_events = _twin_changes(twin, write, now, iso(now) or "")
        if changes:
            self._save(conn, twin, changes)
        return twin_json(twin, device, module), write_events

    def replace_desired_in(
        self, conn: Connection, items: Sequence[tuple[Mapping[str, Any], dict[str, Any]]]
    ) -> list[events.TwinDesiredChanged]:
        """Replace the desired properties of many twins in the caller's transaction, in one
        statement. Each item is (the twin row as loaded under the caller's lock, new desired);
        the caller has created the module identities the documents name, and publishes the
        returned events after its commit."""
        if not items:
            return []
        now = utc_now()
        stamp = iso(now) or ""
        params = []
        changed = []
        # Many twins usually get the same document (one deployment): check it and build its
        # metadata once per document object and version. ``items`` keeps the objects alive.
        documents: dict[int, tuple[dict[str, Any], str]] = {}
        metadata: dict[tuple[int, int], str] = {}
        for twin, desired in items:
            version = twin["desired_version"] + 1
            document = documents.get(id(desired))
            if document is None:
                new_desired = strip_nulls(desired)
                check_size(new_desired, "properties.desired", MAX_PROPERTIES_BYTES)
                document = documents[id(desired)] = (new_desired, encode_json(new_desired))
            new_desired, desired_text = document
            meta = metadata.get((id(desired), version))
            if meta is None:
                meta = metadata[(id(desired), version)] = encode_json(
                    build_metadata(new_desired, stamp, version)
                )
            params.append(
                {
                    "device_id": twin["device_id"],
                    "module_id": twin["module_id"],
                    "desired": desired_text,
                    "desired_meta": meta,
                    "desired_version": version,
                    "version": twin["version"] + 1,
                    "updated_at": now,
                }
            )
            pushed = replacement_patch(twin["desired"] or {}, new_desired)
            module_id = None if twin["module_id"] == DEVICE_TWIN else twin["module_id"]
            changed.append(
                events.TwinDesiredChanged(
                    twin["device_id"], module_id, pushed, version, identities_ensured=True
                )
            )
        update_rows(conn, _TWINS, _TWIN_KEY, params, json_text=("desired", "desired_meta"))
        return changed

    def patch_reported(self, device_id: str, module_id: str | None, patch: dict[str, Any]) -> int:
        """Merge a device's reported-properties patch; returns the new reported ``$version``."""
        validate_patch(patch, "properties.reported")
        now = utc_now()
        stamp = iso(now) or ""
        with self.db.write_conn() as conn:
            twin = self._load(conn, device_id, module_id, lock=True)
            version = twin.reported_version + 1
            new_reported, new_meta = merge_patch(
                twin.reported or {}, twin.reported_meta or {}, patch, stamp, version
            )
            check_size(new_reported, "properties.reported", MAX_PROPERTIES_BYTES)
            self._save(
                conn,
                twin,
                {
                    "reported": new_reported,
                    "reported_meta": new_meta,
                    "reported_version": version,
                    "version": twin.version + 1,
                    "updated_at": now,
                },
            )
        self.bus.publish(events.TwinReportedChanged(device_id, module_id, patch, version))
        return version

    def get_desired(self, device_id: str, module_id: str | None = None) -> dict[str, Any]:
        """Desired properties with ``$version`` (what a device gets on a twin GET)."""
        with self.db.read_conn() as conn:
            twin = self._load(conn, device_id, module_id, lock=False)
            return {**(twin.desired or {}), "$version": twin.desired_version}

    def get_device_side(self, device_id: str, module_id: str | None = None) -> dict[str, Any]:
        """The twin as a device sees it: ``{"desired": {...}, "reported": {...}}`` with versions."""
        with self.db.read_conn() as conn:
            twin = self._load(conn, device_id, module_id, lock=False)
            return {
                "desired": {**(twin.desired or {}), "$version": twin.desired_version},
                "reported": {**(twin.reported or {}), "$version": twin.reported_version},
            }
