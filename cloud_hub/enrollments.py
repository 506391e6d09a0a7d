"""DPS-style enrollment groups and device self-registration (symmetric-key group attestation).

Groups and registrations live in the hub's database (tables ``enrollment_groups`` and
``registrations``), so every hub process on one PostgreSQL database sees the same groups. A device
proves membership with a SAS token signed with ``base64(HMAC-SHA256(group key, registrationId))``
over ``{groupId}/registrations/{registrationId}``; the hub then creates the device with that key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud_hub.db import Database
from cloud_hub.errors import AlreadyExists, HubError, InvalidInput, NotFound
from cloud_hub.identity import check_id, new_key
from cloud_hub.models import Base, EnrollmentGroupRow, RegistrationRow
from cloud_hub.registry import Registry
from cloud_hub.twindoc import iso
from edgefleet.utctime import utc_now

log = logging.getLogger(__name__)
STATUSES = ("enabled", "disabled")
LEGACY_FILE = "enrollment-groups.json"
R = TypeVar("R", bound=Base)


class RegistrationRefused(HubError):
    status = 401
    code = "Unauthorized"


def derive_device_key(group_key_b64: str, registration_id: str) -> str:
    mac = hmac.new(base64.b64decode(group_key_b64), registration_id.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def check_sas(token: str, key_b64: str, resource: str) -> bool:
    """True when ``token`` is an unexpired SAS token for ``resource`` signed with the key."""
    if not token.startswith("SharedAccessSignature "):
        return False
    fields = {k: v[0] for k, v in parse_qs(token.split(" ", 1)[1], keep_blank_values=True).items()}
    try:
        expiry = int(fields["se"])
        sr, sig = fields["sr"], fields["sig"]
    except (KeyError, ValueError):
        return False
    if expiry < time.time() or sr != resource:
        return False
    mac = hmac.new(
        base64.b64decode(key_b64), f"{quote(sr, safe='')}\n{expiry}".encode(), hashlib.sha256
    )
    return hmac.compare_digest(base64.b64encode(mac.digest()), sig.encode("utf-8", "replace"))


def _object(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("must be an object", path=path)
    return value


def _group_key(value: Any, path: str) -> str:
    """A key as the registry accepts device keys (base64 of 16-64 bytes); generated if absent."""
    if value is None or value == "":
        return new_key()
    if not isinstance(value, str):
        raise InvalidInput("must be a base64 string", path=path)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("must be base64", path=path) from None
    if not 16 <= len(raw) <= 64:
        raise InvalidInput("must decode to 16-64 bytes", path=path)
    return value


def _group_json(row: EnrollmentGroupRow) -> dict[str, Any]:
    return {
        "enrollmentGroupId": row.group_id,
        "attestation": {
            "type": "symmetricKey",
            "symmetricKey": {"primaryKey": row.primary_key, "secondaryKey": row.secondary_key},
        },
        "capabilities": {"iotEdge": row.iot_edge},
        "provisioningStatus": row.provisioning_status,
        "createdDateTimeUtc": iso(row.created_at),
        "lastUpdatedDateTimeUtc": iso(row.updated_at),
    }


def _registration_json(row: RegistrationRow) -> dict[str, Any]:
    return {
        "registrationId": row.registration_id,
        "status": row.status,
        "deviceId": row.device_id,
        "enrollmentGroupId": row.group_id,
        "registrationCount": row.count,
        "createdDateTimeUtc": iso(row.created_at),
        "lastUpdatedDateTimeUtc": iso(row.updated_at),
    }


def _group_row(session: Session, group_id: str) -> EnrollmentGroupRow:
    row = session.get(EnrollmentGroupRow, group_id)
    if row is None:
        raise NotFound(f"enrollment group {group_id!r} not found", path="enrollmentGroupId")
    return row


class Enrollments:
    """Enrollment groups (create/replace, read, delete) and self-registration against them."""

    def __init__(self, db: Database, registry: Registry) -> None:
        self.db = db
        self.registry = registry

    def put_group(self, group_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create or replace a group; keys not given are generated (as for devices)."""
        check_id(group_id, "enrollmentGroupId")
        body = _object(body, "body")
        att = _object(body.get("attestation"), "attestation")
        kind = att.get("type", "symmetricKey")
        if kind != "symmetricKey":
            raise InvalidInput("only symmetricKey is supported", path="attestation.type")
        sym = _object(att.get("symmetricKey"), "attestation.symmetricKey")
        primary = _group_key(sym.get("primaryKey"), "attestation.symmetricKey.primaryKey")
        secondary = _group_key(sym.get("secondaryKey"), "attestation.symmetricKey.secondaryKey")
        caps = _object(body.get("capabilities"), "capabilities")
        iot_edge = caps.get("iotEdge", False)
        if not isinstance(iot_edge, bool):
            raise InvalidInput("must be true or false", path="capabilities.iotEdge")
        status = body.get("provisioningStatus", "enabled")
        if status not in STATUSES:
            raise InvalidInput("must be 'enabled' or 'disabled'", path="provisioningStatus")
        now = utc_now()

        def replace(row: EnrollmentGroupRow) -> None:
            row.primary_key, row.secondary_key = primary, secondary
            row.iot_edge, row.provisioning_status = iot_edge, str(status)
            row.updated_at = now

        def new() -> EnrollmentGroupRow:
            return EnrollmentGroupRow(group_id=group_id, created_at=now)

        return _group_json(self._upsert(EnrollmentGroupRow, group_id, new, replace))

    def _upsert(
        self, model: type[R], key: str, new: Callable[[], R], change: Callable[[R], None]
    ) -> R:
        """Change row ``key`` of ``model`` (a ``new()`` one when there is none) in one
        transaction; when another hub inserts the same key meanwhile, change that row instead."""
        for attempt in range(3):
            try:
                with self.db.write() as session:
                    row = session.get(model, key)
                    if row is None:
                        row = new()
                        session.add(row)
                    change(row)
                return row
            except IntegrityError:  # created concurrently by another hub
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get_group(self, group_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            row = _group_row(session, group_id)
            return _group_json(row)

    def delete_group(self, group_id: str) -> None:
        """Delete a group and its registration records (the devices stay)."""
        with self.db.write() as session:
            row = _group_row(session, group_id)
            session.delete(row)

    def get_registration(self, registration_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            row = session.get(RegistrationRow, registration_id)
            if row is None:
                raise NotFound(f"registration {registration_id!r} not found", path="registrationId")
            return _registration_json(row)

    def list_registrations(self, group_id: str) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = session.scalars(
                select(RegistrationRow)
                .where(RegistrationRow.group_id == group_id)
                .order_by(RegistrationRow.registration_id)
            )
            return [_registration_json(r) for r in rows]

    def register(self, registration_id: str, group_id: Any, authorization: str) -> dict[str, Any]:
        """Create the device (or accept it again with the same key); idempotent.

        Raises ``RegistrationRefused`` (401) for an unknown or disabled group, a SAS token that
        does not match, or an existing device with other credentials.
        """
        check_id(registration_id, "registrationId")
        if not isinstance(group_id, str) or not group_id:
            raise InvalidInput("enrollmentGroupId is required", path="enrollmentGroupId")
        with self.db.read() as session:
            group = session.get(EnrollmentGroupRow, group_id)
        if group is None or group.provisioning_status != "enabled":
            raise RegistrationRefused("unknown or disabled enrollment group")
        resource = f"{group_id}/registrations/{registration_id}"
        device_key = None
        for group_key in (group.primary_key, group.secondary_key):
            candidate = derive_device_key(group_key, registration_id)
            if check_sas(authorization, candidate, resource):
                device_key = candidate
                break
        if device_key is None:
            raise RegistrationRefused("SAS token does not match the enrollment group")
        spec = {
            "authentication": {
                "type": "sas",
                "symmetricKey": {"primaryKey": device_key, "secondaryKey": device_key},
            },
            "capabilities": {"iotEdge": group.iot_edge},
        }
        try:
            self.registry.create_device(registration_id, spec)
        except AlreadyExists:
            if not self.registry.authenticate(registration_id, device_key):
                raise RegistrationRefused("device exists with other credentials") from None
        return self._record(registration_id, group_id)

    def _record(self, registration_id: str, group_id: str) -> dict[str, Any]:
        now = utc_now()

        def assign(row: RegistrationRow) -> None:
            row.group_id, row.status = group_id, "assigned"
            row.count += 1
            row.updated_at = now

        def new() -> RegistrationRow:
            return RegistrationRow(
                registration_id=registration_id, device_id=registration_id, count=0, created_at=now
            )

        return _registration_json(self._upsert(RegistrationRow, registration_id, new, assign))

    def import_legacy_file(self, data_dir: Path) -> int:
        """Move groups from the JSON file older hubs kept in the data dir into the database."""
        path = Path(data_dir) / LEGACY_FILE
        if not path.is_file():
            return 0
        try:
            groups = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("%s is unreadable; not imported", path)
            return 0
        imported = 0
        for group_id, body in (groups if isinstance(groups, dict) else {}).items():
            try:
                with self.db.read() as session:
                    if session.get(EnrollmentGroupRow, group_id) is not None:
                        continue
                self.put_group(str(group_id), body if isinstance(body, dict) else {})
                imported += 1
            except HubError as exc:
                log.warning("enrollment group %r not imported: %s", group_id, exc.message)
        try:
            path.replace(path.with_name(LEGACY_FILE + ".imported"))
        except OSError:  # another hub process on this data dir was quicker
            pass
        return imported
