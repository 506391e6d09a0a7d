"""Identity validation and JSON shapes for devices and modules (IoT Hub's camelCase)."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import uuid
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cloud_hub.errors import InvalidInput
from cloud_hub.models import DeviceRow, ModuleRow
from cloud_hub.twindoc import iso

# IoT Hub: up to 128 ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ '
_ID_RE = re.compile(r"^[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}$")
_THUMB_RE = re.compile(r"^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")
EDGE_SYSTEM_MODULES = ("$edgeAgent", "$edgeHub")
_M = TypeVar("_M", bound=BaseModel)


def check_id(value: str, what: str) -> str:
    if not _ID_RE.match(value):
        raise InvalidInput(
            f"invalid {what} {value!r}: 1-128 ASCII letters, digits or -.%_*?!(),:=@$'",
            path=what,
        )
    return value


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def new_etag() -> str:
    return base64.b64encode(secrets.token_bytes(6)).decode()


def new_generation_id() -> str:
    return str(uuid.uuid4().int)[:18]


def twin_etag(version: int) -> str:
    return base64.b64encode(version.to_bytes(8, "big")).decode()


def _check_key(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64") from None
    if not 16 <= len(raw) <= 64:
        raise ValueError("must decode to 16-64 bytes")
    return value


def _check_thumb(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not _THUMB_RE.match(value):
        raise ValueError("must be a SHA-1 (40 hex) or SHA-256 (64 hex) thumbprint")
    return value.upper()


class _Camel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class SymmetricKey(_Camel):
    primary_key: str | None = Field(default=None, alias="primaryKey")
    secondary_key: str | None = Field(default=None, alias="secondaryKey")

    _k = field_validator("primary_key", "secondary_key")(_check_key)


class X509Thumbprint(_Camel):
    primary_thumbprint: str | None = Field(default=None, alias="primaryThumbprint")
    secondary_thumbprint: str | None = Field(default=None, alias="secondaryThumbprint")

    _t = field_validator("primary_thumbprint", "secondary_thumbprint")(_check_thumb)


class Authentication(_Camel):
    type: Literal["sas", "selfSigned", "certificateAuthority", "none"] = "sas"
    symmetric_key: SymmetricKey | None = Field(default=None, alias="symmetricKey")
    x509_thumbprint: X509Thumbprint | None = Field(default=None, alias="x509Thumbprint")


class Capabilities(_Camel):
    iot_edge: bool = Field(default=False, alias="iotEdge")


class DeviceSpec(_Camel):
    """What a client may set on a device (read-only fields in the body are ignored)."""

    device_id: str | None = Field(default=None, alias="deviceId")
    status: Literal["enabled", "disabled"] = "enabled"
    status_reason: str | None = Field(default=None, alias="statusReason", max_length=128)
    authentication: Authentication | None = None
    capabilities: Capabilities | None = None


class ModuleSpec(_Camel):
    device_id: str | None = Field(default=None, alias="deviceId")
    module_id: str | None = Field(default=None, alias="moduleId")
    managed_by: str | None = Field(default=None, alias="managedBy", max_length=128)
    authentication: Authentication | None = None


def parse_spec(model: type[_M], body: Any) -> _M:
    """Validate a JSON body, turning pydantic errors into one InvalidInput naming the field."""
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object", path="body")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{path}: {first['msg']}", path=path) from None


def apply_auth(row: DeviceRow | ModuleRow, auth: Authentication | None, *, keep: bool) -> None:
    """Set credentials on a row; missing SAS keys are generated (or kept on update)."""
    auth = auth or Authentication()
    row.auth_type = auth.type
    if auth.type == "sas":
        sym = auth.symmetric_key or SymmetricKey()
        row.primary_key = sym.primary_key or (row.primary_key if keep else None) or new_key()
        row.secondary_key = sym.secondary_key or (row.secondary_key if keep else None) or new_key()
        row.primary_thumbprint = row.secondary_thumbprint = None
    elif auth.type == "selfSigned":
        thumb = auth.x509_thumbprint or X509Thumbprint()
        if not thumb.primary_thumbprint:
            raise InvalidInput(
                "authentication.x509Thumbprint.primaryThumbprint is required for selfSigned",
                path="authentication.x509Thumbprint.primaryThumbprint",
            )
        row.primary_thumbprint = thumb.primary_thumbprint
        row.secondary_thumbprint = thumb.secondary_thumbprint or thumb.primary_thumbprint
        row.primary_key = row.secondary_key = None
    else:
        row.primary_key = row.secondary_key = None
        row.primary_thumbprint = row.secondary_thumbprint = None


def _auth_json(row: DeviceRow | ModuleRow) -> dict[str, Any]:
    return {
        "symmetricKey": {"primaryKey": row.primary_key, "secondaryKey": row.secondary_key},
        "x509Thumbprint": {
            "primaryThumbprint": row.primary_thumbprint,
            "secondaryThumbprint": row.secondary_thumbprint,
        },
        "type": row.auth_type,
    }


def device_json(row: DeviceRow) -> dict[str, Any]:
    return {
        "deviceId": row.device_id,
        "generationId": row.generation_id,
        "etag": row.etag,
        "connectionState": row.connection_state,
        "status": row.status,
        "statusReason": row.status_reason,
        "connectionStateUpdatedTime": iso(row.connection_state_updated_time),
        "statusUpdatedTime": iso(row.status_updated_time),
        "lastActivityTime": iso(row.last_activity_time),
        "cloudToDeviceMessageCount": row.cloud_to_device_message_count,
        "authentication": _auth_json(row),
        "capabilities": {"iotEdge": row.iot_edge},
    }


def module_json(row: ModuleRow) -> dict[str, Any]:
    return {
        "deviceId": row.device_id,
        "moduleId": row.module_id,
        "managedBy": row.managed_by,
        "generationId": row.generation_id,
        "etag": row.etag,
        "connectionState": row.connection_state,
        "connectionStateUpdatedTime": iso(row.connection_state_updated_time),
        "lastActivityTime": iso(row.last_activity_time),
        "cloudToDeviceMessageCount": row.cloud_to_device_message_count,
        "authentication": _auth_json(row),
    }


def etag_matches(if_match: str | None, etag: str) -> bool:
    """``If-Match`` check; quotes are optional and ``*`` matches anything."""
    if if_match is None:
        return True
    value = if_match.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    return value == "*" or value == etag
