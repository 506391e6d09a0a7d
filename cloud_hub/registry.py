"""Device and module identity registry (service layer used by the REST API, MQTT side and CLI)."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud_hub import events
from cloud_hub.bulk_sql import insert_rows
from cloud_hub.db import Database
from cloud_hub.errors import (
    AlreadyExists,
    DeviceNotFound,
    InvalidInput,
    ModuleNotFound,
    PreconditionFailed,
)
from cloud_hub.events import EventBus
from cloud_hub.identity import (
    EDGE_SYSTEM_MODULES,
    DeviceSpec,
    ModuleSpec,
    apply_auth,
    check_id,
    device_json,
    etag_matches,
    module_json,
    new_etag,
    new_generation_id,
    new_key,
    parse_spec,
)
from cloud_hub.models import DEVICE_TWIN, DeviceRow, ModuleRow, TwinRow
from cloud_hub.twindoc import MAX_TAGS_BYTES, check_size, validate_patch
from edgefleet.utctime import utc_now


@dataclass(frozen=True)
class Identity:
    """Credentials of one device or module (for broker password files and authentication)."""

    device_id: str
    module_id: str | None
    enabled: bool
    auth_type: str
    primary_key: str | None
    secondary_key: str | None
    primary_thumbprint: str | None
    secondary_thumbprint: str | None


def _new_twin(device_id: str, module_id: str) -> TwinRow:
    return TwinRow(
        device_id=device_id,
        module_id=module_id,
        version=1,
        tags={},
        desired={},
        desired_meta={},
        desired_version=1,
        reported={},
        reported_meta={},
        reported_version=1,
        updated_at=utc_now(),
    )


_DEVICES: Table = DeviceRow.__table__  # type: ignore[assignment]
_MODULES: Table = ModuleRow.__table__  # type: ignore[assignment]
_TWINS: Table = TwinRow.__table__  # type: ignore[assignment]
_EMPTY_DOCUMENTS = ("tags", "desired", "desired_meta", "reported", "reported_meta")


def _new_twin_columns(device_id: str, module_id: str, now: datetime) -> dict[str, Any]:
    """``_new_twin``'s values but the empty documents (``_EMPTY_DOCUMENTS``, SQL constants)."""
    return {
        "device_id": device_id,
        "module_id": module_id,
        "version": 1,
        "desired_version": 1,
        "reported_version": 1,
        "updated_at": now,
        "configurations": None,
    }


def _new_module_columns(
    device_id: str, module_id: str, managed_by: str | None, now: datetime
) -> dict[str, Any]:
    """The INSERT values of a new SAS module identity with generated keys."""
    return {
        "device_id": device_id,
        "module_id": module_id,
        "generation_id": new_generation_id(),
        "etag": new_etag(),
        "managed_by": managed_by,
        "auth_type": "sas",
        "primary_key": new_key(),
        "secondary_key": new_key(),
        "primary_thumbprint": None,
        "secondary_thumbprint": None,
        "connection_state": "Disconnected",
        "connection_state_updated_time": now,
        "last_activity_time": None,
        "cloud_to_device_message_count": 0,
        "created_at": now,
    }


def _new_device_row(device_id: str, spec: DeviceSpec, now: datetime) -> DeviceRow:
    return DeviceRow(**_new_device_columns(device_id, spec, now))


def _new_device_columns(device_id: str, spec: DeviceSpec, now: datetime) -> dict[str, Any]:
    """The INSERT values of a new device (keys generated unless the spec gives them)."""
    row = SimpleNamespace(
        device_id=device_id,
        generation_id=new_generation_id(),
        etag=new_etag(),
        status=spec.status,
        status_reason=spec.status_reason,
        status_updated_time=now,
        iot_edge=bool(spec.capabilities and spec.capabilities.iot_edge),
        connection_state="Disconnected",
        connection_state_updated_time=now,
        last_activity_time=None,
        cloud_to_device_message_count=0,
        created_at=now,
    )
    apply_auth(cast(DeviceRow, row), spec.authentication, keep=False)
    return vars(row)


def encode_continuation(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def decode_continuation(token: str | None) -> str | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("invalid continuation token", path="x-ms-continuation") from None


class Registry:
    def __init__(self, db: Database, bus: EventBus) -> None:
        self.db = db
        self.bus = bus

    # -- devices -----------------------------------------------------------------------------

    def create_device(self, device_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create a device (keys generated unless given); iotEdge adds its system modules."""
        check_id(device_id, "deviceId")
        spec = parse_spec(DeviceSpec, body or {})
        if spec.device_id is not None and spec.device_id != device_id:
            raise InvalidInput("deviceId in the body differs from the URL", path="deviceId")
        row = _new_device_row(device_id, spec, utc_now())
        created_modules: list[ModuleRow] = []
        with _unique(f"device {device_id!r} already exists"), self.db.write() as session:
            if session.get(DeviceRow, device_id) is not None:
                raise AlreadyExists(f"device {device_id!r} already exists", path="deviceId")
            session.add(row)
            session.flush()
            session.add(_new_twin(device_id, DEVICE_TWIN))
            if row.iot_edge:
                created_modules = self._add_edge_modules(session, device_id, new_device=True)
        result = device_json(row)
        self.bus.publish(events.DeviceCreated(device_id, result))
        for module in created_modules:
            self.bus.publish(events.ModuleCreated(device_id, module.module_id, module_json(module)))
        return result

    def create_devices(
        self, items: list[tuple[str, dict[str, Any], dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Bulk create ``(device_id, body, tags)`` in one transaction (all or nothing).

        Plain column dicts in a few multi-row INSERTs (devices, twins, the system modules of
        IoT Edge devices and their twins), not ORM objects: imports create many thousands.
        """
        columns: list[dict[str, Any]] = []
        now = utc_now()
        for device_id, body, tags in items:
            check_id(device_id, "deviceId")
            validate_patch(tags, "tags", allow_null=False)
            check_size(tags, "tags", MAX_TAGS_BYTES)
            columns.append(_new_device_columns(device_id, parse_spec(DeviceSpec, body), now))
        rows = [cast(DeviceRow, SimpleNamespace(**c)) for c in columns]
        with _unique("a device of the batch already exists"), self.db.write_conn() as conn:
            existing = conn.execute(
                select(DeviceRow.device_id).where(
                    DeviceRow.device_id.in_([r.device_id for r in rows])
                )
            ).first()
            if existing is not None:
                raise AlreadyExists(f"device {existing[0]!r} already exists", path="deviceId")
            insert_rows(conn, _DEVICES, columns)
            twins = [
                {**_new_twin_columns(row.device_id, DEVICE_TWIN, now), "tags": tags}
                for row, (_id, _body, tags) in zip(rows, items, strict=True)
            ]
            empty = dict.fromkeys(_EMPTY_DOCUMENTS, "'{}'")
            insert_rows(conn, _TWINS, twins, {k: v for k, v in empty.items() if k != "tags"})
            edge = [(r.device_id, m) for r in rows if r.iot_edge for m in EDGE_SYSTEM_MODULES]
            if edge:
                insert_rows(conn, _MODULES, [_new_module_columns(d, m, None, now) for d, m in edge])
                insert_rows(conn, _TWINS, [_new_twin_columns(d, m, now) for d, m in edge], empty)
        results = [device_json(r) for r in rows]
        for result in results:
            self.bus.publish(events.DeviceCreated(result["deviceId"], result))
        return results

    def _add_edge_modules(
        self, session: Session, device_id: str, *, new_device: bool = False
    ) -> list[ModuleRow]:
        """Add ``$edgeAgent`` / ``$edgeHub``; a device created in this session has none yet
        (no lookup, which would flush the session once per module)."""
        created = []
        for module_id in EDGE_SYSTEM_MODULES:
            if not new_device:
                with session.no_autoflush:
                    if session.get(ModuleRow, (device_id, module_id)) is not None:
                        continue
            module = self._new_module_row(device_id, module_id, None)
            session.add(module)
            session.add(_new_twin(device_id, module_id))
            created.append(module)
        return created

    def get_device(self, device_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            row = session.get(DeviceRow, device_id)
            if row is None:
                raise DeviceNotFound(f"device {device_id!r} not found", path="deviceId")
            return device_json(row)

    def device_exists(self, device_id: str) -> bool:
        with self.db.read() as session:
            return session.get(DeviceRow, device_id) is not None

    def list_devices(
        self, top: int = 100, continuation: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of devices ordered by id, and the continuation token of the next page."""
        if not 1 <= top <= 1000:
            raise InvalidInput("top must be between 1 and 1000", path="top")
        after = decode_continuation(continuation)
        stmt = select(DeviceRow).order_by(DeviceRow.device_id).limit(top + 1)
        if after is not None:
            stmt = stmt.where(DeviceRow.device_id > after)
        with self.db.read() as session:
            rows = list(session.scalars(stmt))
        more = len(rows) > top
        rows = rows[:top]
        token = encode_continuation(rows[-1].device_id) if more and rows else None
        return [device_json(r) for r in rows], token

    def update_device(
        self, device_id: str, body: dict[str, Any], if_match: str | None = None
    ) -> dict[str, Any]:
        """Replace a device's settable fields; ``if_match`` must equal its etag (or be ``*``)."""
        spec = parse_spec(DeviceSpec, body)
        if spec.device_id is not None and spec.device_id != device_id:
            raise InvalidInput("deviceId in the body differs from the URL", path="deviceId")
        created_modules: list[ModuleRow] = []
        with self.db.write() as session:
            row = _device_to_change(session, device_id, if_match)
            before = (row.primary_key, row.secondary_key, row.primary_thumbprint, row.auth_type)
            # fields absent from the body keep their values (a partial update is safe)
            given = spec.model_fields_set
            new_status = spec.status if "status" in given else row.status
            status_changed = new_status != row.status
            if status_changed:
                row.status_updated_time = utc_now()
            row.status = new_status
            if "status_reason" in given:
                row.status_reason = spec.status_reason
            if spec.authentication is not None:
                apply_auth(row, spec.authentication, keep=True)
            if spec.capabilities is not None:
                row.iot_edge = spec.capabilities.iot_edge
                if row.iot_edge:
                    created_modules = self._add_edge_modules(session, device_id)
            after = (row.primary_key, row.secondary_key, row.primary_thumbprint, row.auth_type)
            row.etag = new_etag()
            result = device_json(row)
        self.bus.publish(
            events.DeviceUpdated(
                device_id,
                result,
                status_changed=status_changed,
                credentials_changed=before != after,
            )
        )
        for module in created_modules:
            self.bus.publish(events.ModuleCreated(device_id, module.module_id, module_json(module)))
        return result

    def rotate_key(
        self, device_id: str, which: str = "primary", module_id: str | None = None
    ) -> dict[str, Any]:
        """Give the device (or module) a new primary or secondary key, or swap the two."""
        if which not in ("primary", "secondary", "swap"):
            raise InvalidInput("which must be primary, secondary or swap", path="which")
        with self.db.write() as session:
            row: DeviceRow | ModuleRow | None
            if module_id is None:
                row = session.get(DeviceRow, device_id, with_for_update=True)
            else:
                row = session.get(ModuleRow, (device_id, module_id), with_for_update=True)
            if row is None:
                raise (DeviceNotFound if module_id is None else ModuleNotFound)(
                    f"{device_id}/{module_id or ''} not found".rstrip("/"), path="deviceId"
                )
            if row.auth_type != "sas":
                raise InvalidInput("only sas identities have keys to rotate", path="which")
            if which == "primary":
                row.primary_key = new_key()
            elif which == "secondary":
                row.secondary_key = new_key()
            else:
                row.primary_key, row.secondary_key = row.secondary_key, row.primary_key
            row.etag = new_etag()
            result = device_json(row) if isinstance(row, DeviceRow) else module_json(row)
        if module_id is None:
            self.bus.publish(events.DeviceUpdated(device_id, result, credentials_changed=True))
        else:
            self.bus.publish(
                events.ModuleUpdated(device_id, module_id, result, credentials_changed=True)
            )
        return result

    def delete_device(self, device_id: str, if_match: str | None = None) -> None:
        with self.db.write() as session:
            row = _device_to_change(session, device_id, if_match)
            session.execute(delete(TwinRow).where(TwinRow.device_id == device_id))
            session.execute(delete(ModuleRow).where(ModuleRow.device_id == device_id))
            session.delete(row)
        self.bus.publish(events.DeviceDeleted(device_id))

    # -- modules -----------------------------------------------------------------------------

    def _new_module_row(self, device_id: str, module_id: str, managed_by: str | None) -> ModuleRow:
        now = utc_now()
        row = ModuleRow(
            device_id=device_id,
            module_id=module_id,
            generation_id=new_generation_id(),
            etag=new_etag(),
            managed_by=managed_by,
            connection_state="Disconnected",
            connection_state_updated_time=now,
            last_activity_time=None,
            cloud_to_device_message_count=0,
            created_at=now,
        )
        apply_auth(row, None, keep=False)
        return row

    def create_module(
        self, device_id: str, module_id: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        check_id(module_id, "moduleId")
        if module_id.startswith("$"):
            raise InvalidInput("module ids starting with '$' are reserved", path="moduleId")
        spec = parse_spec(ModuleSpec, body or {})
        if spec.module_id is not None and spec.module_id != module_id:
            raise InvalidInput("moduleId in the body differs from the URL", path="moduleId")
        row = self._new_module_row(device_id, module_id, spec.managed_by)
        apply_auth(row, spec.authentication, keep=False)
        with _unique(f"module {device_id}/{module_id} already exists"), self.db.write() as session:
            if session.get(DeviceRow, device_id) is None:
                raise DeviceNotFound(f"device {device_id!r} not found", path="deviceId")
            if session.get(ModuleRow, (device_id, module_id)) is not None:
                err = AlreadyExists(f"module {device_id}/{module_id} already exists")
                err.code = "ModuleAlreadyExistsOnDevice"
                raise err
            session.add(row)
            session.add(_new_twin(device_id, module_id))
            result = module_json(row)
        self.bus.publish(events.ModuleCreated(device_id, module_id, result))
        return result

    def add_modules_in(
        self, conn: Connection, modules: Sequence[tuple[str, str]], managed_by: str
    ) -> list[events.ModuleCreated]:
        """Insert (device id, module id) identities with empty twins inside the caller's
        transaction, in two statements; the caller publishes the returned events after its
        commit. Ids must be valid and new."""
        if not modules:
            return []
        # Plain column dicts, not ORM objects: a deployment creates thousands at once.
        now = utc_now()
        rows = [_new_module_columns(d, m, managed_by, now) for d, m in modules]
        insert_rows(conn, _MODULES, rows)
        twins = [_new_twin_columns(d, m, now) for d, m in modules]
        insert_rows(conn, _TWINS, twins, dict.fromkeys(_EMPTY_DOCUMENTS, "'{}'"))
        return [
            events.ModuleCreated(
                r["device_id"], r["module_id"], module_json(cast(ModuleRow, SimpleNamespace(**r)))
            )
            for r in rows
        ]

    def module_ids(self, device_id: str) -> set[str]:
        """The ids of a device's modules (one indexed read; nothing else loaded)."""
        stmt = select(ModuleRow.module_id).where(ModuleRow.device_id == device_id)
        with self.db.read_conn() as conn:
            return set(conn.execute(stmt).scalars())

    def get_module(self, device_id: str, module_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            row = session.get(ModuleRow, (device_id, module_id))
            if row is None:
                raise ModuleNotFound(f"module {device_id}/{module_id} not found", path="moduleId")
            return module_json(row)

    def list_modules(self, device_id: str) -> list[dict[str, Any]]:
        with self.db.read() as session:
            if session.get(DeviceRow, device_id) is None:
                raise DeviceNotFound(f"device {device_id!r} not found", path="deviceId")
            rows = session.scalars(
                select(ModuleRow)
                .where(ModuleRow.device_id == device_id)
                .order_by(ModuleRow.module_id)
            )
            return [module_json(r) for r in rows]

    def update_module(
        self, device_id: str, module_id: str, body: dict[str, Any], if_match: str | None = None
    ) -> dict[str, Any]:
        spec = parse_spec(ModuleSpec, body)
        with self.db.write() as session:
            row = _module_to_change(session, device_id, module_id, if_match)
            before = (row.primary_key, row.secondary_key, row.primary_thumbprint, row.auth_type)
            if spec.authentication is not None:
                apply_auth(row, spec.authentication, keep=True)
            row.managed_by = spec.managed_by
            row.etag = new_etag()
            after = (row.primary_key, row.secondary_key, row.primary_thumbprint, row.auth_type)
            result = module_json(row)
        self.bus.publish(
            events.ModuleUpdated(device_id, module_id, result, credentials_changed=before != after)
        )
        return result

    def delete_module(self, device_id: str, module_id: str, if_match: str | None = None) -> None:
        with self.db.write() as session:
            row = _module_to_change(session, device_id, module_id, if_match)
            session.execute(
                delete(TwinRow).where(
                    TwinRow.device_id == device_id, TwinRow.module_id == module_id
                )
            )
            session.delete(row)
        self.bus.publish(events.ModuleDeleted(device_id, module_id))

    # -- authentication and presence ---------------------------------------------------------

    def identity(self, device_id: str, module_id: str | None = None) -> Identity | None:
        with self.db.read() as session:
            if module_id is None:
                dev = session.get(DeviceRow, device_id)
                return None if dev is None else _identity(dev, None, dev.status == "enabled")
            mod = session.get(ModuleRow, (device_id, module_id))
            if mod is None:
                return None
            dev = session.get(DeviceRow, device_id)
            return _identity(mod, module_id, dev is not None and dev.status == "enabled")

    def identities(self, *, modules: bool = True) -> Iterator[Identity]:
        """Every device and (unless ``modules`` is False) module identity (streamed), e.g. to
        write a broker password file."""
        with self.db.read() as session:
            enabled: dict[str, bool] = {}
            for dev in session.scalars(select(DeviceRow).order_by(DeviceRow.device_id)):
                enabled[dev.device_id] = dev.status == "enabled"
                yield _identity(dev, None, enabled[dev.device_id])
            if not modules:
                return
            for mod in session.scalars(select(ModuleRow)):
                yield _identity(mod, mod.module_id, enabled.get(mod.device_id, False))

    def authenticate(self, device_id: str, key: str, module_id: str | None = None) -> bool:
        """True when ``key`` is the primary or secondary key of an enabled identity."""
        ident = self.identity(device_id, module_id)
        if ident is None or not ident.enabled:
            return False
        given = key.encode()
        return any(
            candidate is not None and hmac.compare_digest(candidate.encode(), given)
            for candidate in (ident.primary_key, ident.secondary_key)
        )

    def set_connection_state(
        self, device_id: str, connected: bool, module_id: str | None = None
    ) -> None:
        now = utc_now()
        state = "Connected" if connected else "Disconnected"
        with self.db.write() as session:
            row: DeviceRow | ModuleRow | None
            if module_id is None:
                row = session.get(DeviceRow, device_id)
            else:
                row = session.get(ModuleRow, (device_id, module_id))
            if row is None:
                return
            row.connection_state = state
            row.connection_state_updated_time = now
            row.last_activity_time = now
        self.bus.publish(events.ConnectionStateChanged(device_id, module_id, connected))


def _device_to_change(session: Session, device_id: str, if_match: str | None) -> DeviceRow:
    """The device row, locked, when its etag matches ``if_match``."""
    row = session.get(DeviceRow, device_id, with_for_update=True)
    if row is None:
        raise DeviceNotFound(f"device {device_id!r} not found", path="deviceId")
    if not etag_matches(if_match, row.etag):
        raise PreconditionFailed(f"etag of device {device_id!r} does not match If-Match")
    return row


def _module_to_change(
    session: Session, device_id: str, module_id: str, if_match: str | None
) -> ModuleRow:
    """The module row, locked, when its etag matches ``if_match``."""
    row = session.get(ModuleRow, (device_id, module_id), with_for_update=True)
    if row is None:
        raise ModuleNotFound(f"module {device_id}/{module_id} not found", path="moduleId")
    if not etag_matches(if_match, row.etag):
        raise PreconditionFailed("etag of the module does not match If-Match")
    return row


@contextmanager
def _unique(message: str) -> Iterator[None]:
    """A concurrent insert of the same key is a conflict (409), not a server error."""
    try:
        yield
    except IntegrityError:
        raise AlreadyExists(message) from None


def _identity(row: DeviceRow | ModuleRow, module_id: str | None, enabled: bool) -> Identity:
    return Identity(
        device_id=row.device_id,
        module_id=module_id,
        enabled=enabled,
        auth_type=row.auth_type,
        primary_key=row.primary_key,
        secondary_key=row.secondary_key,
        primary_thumbprint=row.primary_thumbprint,
        secondary_thumbprint=row.secondary_thumbprint,
    )
