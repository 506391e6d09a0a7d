"""Device and module twins (service layer): read, merge-patch, replace; events after commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, aliased

from cloud_hub import events
from cloud_hub.db import Database
from cloud_hub.errors import DeviceNotFound, InvalidInput, ModuleNotFound, PreconditionFailed
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
    utc_now,
    validate_patch,
)

ModuleRowAlias = aliased(ModuleRow)


def twin_select() -> Select[TwinRow, DeviceRow, ModuleRow]:
    """SELECT twins joined with their device (and module) rows: the base of twin queries."""
    return (
        select(TwinRow, DeviceRow, ModuleRowAlias)
        .join(DeviceRow, DeviceRow.device_id == TwinRow.device_id)
        .outerjoin(
            ModuleRowAlias,
            (ModuleRowAlias.device_id == TwinRow.device_id)
            & (ModuleRowAlias.module_id == TwinRow.module_id),
        )
    )


def twin_json(twin: TwinRow, device: DeviceRow, module: ModuleRow | None = None) -> dict[str, Any]:
    """The IoT Hub twin JSON of a device (module is None) or module twin."""
    ident: DeviceRow | ModuleRow = module if module is not None else device
    doc: dict[str, Any] = {"deviceId": twin.device_id}
    if twin.module_id != DEVICE_TWIN:
        doc["moduleId"] = twin.module_id
    doc.update(
        {
            "etag": twin_etag(twin.version),
            "deviceEtag": device.etag,
            "status": device.status,
            "statusReason": device.status_reason,
            "statusUpdateTime": iso(device.status_updated_time),
            "connectionState": ident.connection_state,
            "lastActivityTime": iso(ident.last_activity_time),
            "cloudToDeviceMessageCount": ident.cloud_to_device_message_count,
            "authenticationType": ident.auth_type,
            "x509Thumbprint": {
                "primaryThumbprint": ident.primary_thumbprint,
                "secondaryThumbprint": ident.secondary_thumbprint,
            },
            "modelId": "",
            "version": twin.version,
            "tags": twin.tags or {},
            "properties": {
                "desired": {
                    **(twin.desired or {}),
                    "$metadata": twin.desired_meta or {},
                    "$version": twin.desired_version,
                },
                "reported": {
                    **(twin.reported or {}),
                    "$metadata": twin.reported_meta or {},
                    "$version": twin.reported_version,
                },
            },
        }
    )
    if twin.module_id == DEVICE_TWIN:
        doc["capabilities"] = {"iotEdge": device.iot_edge}
    return doc


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


class Twins:
    def __init__(self, db: Database, bus: EventBus) -> None:
        self.db = db
        self.bus = bus

    def _load(
        self, session: Session, device_id: str, module_id: str | None, *, lock: bool
    ) -> TwinRow:
        twin = session.get(TwinRow, (device_id, _module_key(module_id)), with_for_update=lock)
        if twin is None:
            if module_id is None:
                raise DeviceNotFound(f"device {device_id!r} not found", path="deviceId")
            raise ModuleNotFound(f"module {device_id}/{module_id} not found", path="moduleId")
        return twin

    def _json(self, session: Session, twin: TwinRow) -> dict[str, Any]:
        device = session.get(DeviceRow, twin.device_id)
        assert device is not None  # foreign key
        module = None
        if twin.module_id != DEVICE_TWIN:
            module = session.get(ModuleRow, (twin.device_id, twin.module_id))
        return twin_json(twin, device, module)

    def get_twin(self, device_id: str, module_id: str | None = None) -> dict[str, Any]:
        with self.db.read() as session:
            return self._json(session, self._load(session, device_id, module_id, lock=False))

    def patch_twin(
        self,
        device_id: str,
        module_id: str | None,
        body: dict[str, Any],
        if_match: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch tags and desired properties (the service-side PATCH /twins/{id})."""
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object", path="body")
        tags_patch = _section(body, "tags")
        desired_patch = _section(body, "desired")
        return self._update(device_id, module_id, tags_patch, desired_patch, if_match, False)

    def replace_twin(
        self,
        device_id: str,
        module_id: str | None,
        body: dict[str, Any],
        if_match: str | None = None,
    ) -> dict[str, Any]:
        """Replace tags and desired properties (PUT /twins/{id}); reported is left alone."""
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object", path="body")
        tags = _section(body, "tags") or {}
        desired = _section(body, "desired") or {}
        return self._update(device_id, module_id, tags, desired, if_match, True)

    def patch_desired(
        self,
        device_id: str,
        module_id: str | None,
        patch: dict[str, Any],
        if_match: str | None = None,
    ) -> dict[str, Any]:
        validate_patch(patch, "properties.desired")
        return self._update(device_id, module_id, None, patch, if_match, False)

    def patch_tags(
        self, device_id: str, module_id: str | None, patch: dict[str, Any]
    ) -> dict[str, Any]:
        validate_patch(patch, "tags")
        return self._update(device_id, module_id, patch, None, None, False)

    def _update(
        self,
        device_id: str,
        module_id: str | None,
        tags_patch: dict[str, Any] | None,
        desired_patch: dict[str, Any] | None,
        if_match: str | None,
        replace: bool,
    ) -> dict[str, Any]:
        now = utc_now()
        stamp = iso(now) or ""
        desired_event: events.TwinDesiredChanged | None = None
        tags_event: events.TwinTagsChanged | None = None
        with self.db.write() as session:
            twin = self._load(session, device_id, module_id, lock=True)
            if not etag_matches(if_match, twin_etag(twin.version)):
                raise PreconditionFailed("twin etag does not match If-Match")
            changed = False
            if tags_patch is not None:
                if replace:
                    new_tags = strip_nulls(tags_patch)
                else:
                    new_tags, _ = merge_patch(twin.tags or {}, {}, tags_patch, stamp, 0)
                check_size(new_tags, "tags", MAX_TAGS_BYTES)
                if new_tags != (twin.tags or {}):
                    twin.tags = new_tags
                    changed = True
                    tags_event = events.TwinTagsChanged(device_id, module_id, new_tags)
            if desired_patch is not None and (desired_patch or replace):
                version = twin.desired_version + 1
                old = twin.desired or {}
                if replace:
                    new_desired = strip_nulls(desired_patch)
                    new_meta = build_metadata(new_desired, stamp, version)
                    pushed = replacement_patch(old, new_desired)
                else:
                    new_desired, new_meta = merge_patch(
                        old, twin.desired_meta or {}, desired_patch, stamp, version
                    )
                    pushed = desired_patch
                check_size(new_desired, "properties.desired", MAX_PROPERTIES_BYTES)
                twin.desired = new_desired
                twin.desired_meta = new_meta
                twin.desired_version = version
                changed = True
                desired_event = events.TwinDesiredChanged(device_id, module_id, pushed, version)
            if changed:
                twin.version += 1
                twin.updated_at = now
            result = self._json(session, twin)
        if tags_event is not None:
            self.bus.publish(tags_event)
        if desired_event is not None:
            self.bus.publish(desired_event)
        return result

    def patch_reported(self, device_id: str, module_id: str | None, patch: dict[str, Any]) -> int:
        """Merge a device's reported-properties patch; returns the new reported ``$version``."""
        validate_patch(patch, "properties.reported")
        now = utc_now()
        stamp = iso(now) or ""
        with self.db.write() as session:
            twin = self._load(session, device_id, module_id, lock=True)
            version = twin.reported_version + 1
            new_reported, new_meta = merge_patch(
                twin.reported or {}, twin.reported_meta or {}, patch, stamp, version
            )
            check_size(new_reported, "properties.reported", MAX_PROPERTIES_BYTES)
            twin.reported = new_reported
            twin.reported_meta = new_meta
            twin.reported_version = version
            twin.version += 1
            twin.updated_at = now
        self.bus.publish(events.TwinReportedChanged(device_id, module_id, patch, version))
        return version

    def get_desired(self, device_id: str, module_id: str | None = None) -> dict[str, Any]:
        """Desired properties with ``$version`` (what a device gets on a twin GET)."""
        with self.db.read() as session:
            twin = self._load(session, device_id, module_id, lock=False)
            return {**(twin.desired or {}), "$version": twin.desired_version}

    def get_device_side(self, device_id: str, module_id: str | None = None) -> dict[str, Any]:
        """The twin as a device sees it: ``{"desired": {...}, "reported": {...}}`` with versions."""
        with self.db.read() as session:
            twin = self._load(session, device_id, module_id, lock=False)
            return {
                "desired": {**(twin.desired or {}), "$version": twin.desired_version},
                "reported": {**(twin.reported or {}), "$version": twin.reported_version},
            }
