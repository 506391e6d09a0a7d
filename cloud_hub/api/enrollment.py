"""DPS-style enrollment groups and device self-registration (symmetric-key group attestation).

``PUT /enrollmentGroups/{id}`` (registry write) stores a group with its symmetric keys (generated
when absent). ``POST /registrations/{registrationId}/register`` (no bearer token) accepts a SAS
token signed with the device key ``base64(HMAC-SHA256(group key, registrationId))`` over
``{groupId}/registrations/{registrationId}`` and creates the device with that key (idempotent).
Groups are kept in ``<data_dir>/enrollment-groups.json`` (one hub host; a table is the scale-out
path).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Body, Depends, FastAPI, Header

from cloud_hub.auth import get_hub, require
from cloud_hub.errors import AlreadyExists, HubError, InvalidInput, NotFound
from cloud_hub.services import Hub
from cloud_hub.tokens import SCOPE_REGISTRY_READ, SCOPE_REGISTRY_WRITE

router = APIRouter(tags=["provisioning"])
_lock = threading.Lock()


class Unauthorized401(HubError):
    status = 401
    code = "Unauthorized"


def _store(hub: Hub) -> Path:
    return Path(hub.settings.data_dir) / "enrollment-groups.json"


def _load(hub: Hub) -> dict[str, Any]:
    try:
        data = json.loads(_store(hub).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(hub: Hub, groups: dict[str, Any]) -> None:
    path = _store(hub)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    os.replace(tmp, path)


def derive_device_key(group_key_b64: str, registration_id: str) -> str:
    mac = hmac.new(base64.b64decode(group_key_b64), registration_id.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def _check_sas(token: str, key_b64: str, resource: str) -> bool:
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


def _key(value: Any, path: str) -> str:
    if value is None:
        return base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        base64.b64decode(str(value), validate=True)
    except ValueError:
        raise InvalidInput("must be base64", path=path) from None
    return str(value)


@router.put(
    "/enrollmentGroups/{group_id}",
    dependencies=[Depends(require(SCOPE_REGISTRY_WRITE))],
    summary="Create or replace an enrollment group (symmetric-key attestation)",
)
def put_group(
    group_id: str, body: dict[str, Any] = Body(default={}), hub: Hub = Depends(get_hub)
) -> dict[str, Any]:
    if not group_id or len(group_id) > 128 or "/" in group_id:
        raise InvalidInput("invalid enrollment group id", path="enrollmentGroupId")
    att = body.get("attestation") or {}
    if not isinstance(att, dict):
        raise InvalidInput("must be an object", path="attestation")
    sym = att.get("symmetricKey") or {}
    if not isinstance(sym, dict):
        raise InvalidInput("must be an object", path="attestation.symmetricKey")
    caps = body.get("capabilities") or {}
    group = {
        "enrollmentGroupId": group_id,
        "attestation": {
            "type": "symmetricKey",
            "symmetricKey": {
                "primaryKey": _key(sym.get("primaryKey"), "attestation.symmetricKey.primaryKey"),
                "secondaryKey": _key(
                    sym.get("secondaryKey"), "attestation.symmetricKey.secondaryKey"
                ),
            },
        },
        "capabilities": {"iotEdge": bool(isinstance(caps, dict) and caps.get("iotEdge"))},
        "provisioningStatus": "enabled"
        if body.get("provisioningStatus", "enabled") == "enabled"
        else "disabled",
    }
    with _lock:
        groups = _load(hub)
        groups[group_id] = group
        _save(hub, groups)
    return group


@router.get(
    "/enrollmentGroups/{group_id}",
    dependencies=[Depends(require(SCOPE_REGISTRY_READ))],
    summary="Get an enrollment group",
)
def get_group(group_id: str, hub: Hub = Depends(get_hub)) -> dict[str, Any]:
    group = _load(hub).get(group_id)
    if group is None:
        raise NotFound(f"enrollment group {group_id!r} not found")
    return dict(group)


@router.post(
    "/registrations/{registration_id}/register",
    summary="Device self-registration with a group-derived key (SAS token)",
)
def register(
    registration_id: str,
    body: dict[str, Any] = Body(...),
    authorization: str = Header(""),
    hub: Hub = Depends(get_hub),
) -> dict[str, Any]:
    group_id = body.get("enrollmentGroupId")
    if not isinstance(group_id, str):
        raise InvalidInput("enrollmentGroupId is required", path="enrollmentGroupId")
    group = _load(hub).get(group_id)
    if group is None or group.get("provisioningStatus") != "enabled":
        raise Unauthorized401("unknown or disabled enrollment group")
    keys = group["attestation"]["symmetricKey"]
    resource = f"{group_id}/registrations/{registration_id}"
    device_key = None
    for group_key in (keys["primaryKey"], keys["secondaryKey"]):
        candidate = derive_device_key(group_key, registration_id)
        if _check_sas(authorization, candidate, resource):
            device_key = candidate
            break
    if device_key is None:
        raise Unauthorized401("SAS token does not match the enrollment group")
    spec = {
        "authentication": {
            "type": "sas",
            "symmetricKey": {"primaryKey": device_key, "secondaryKey": device_key},
        },
        "capabilities": {"iotEdge": group["capabilities"]["iotEdge"]},
    }
    try:
        hub.registry.create_device(registration_id, spec)
        status = "assigned"
    except AlreadyExists:
        if not hub.registry.authenticate(registration_id, device_key):
            raise Unauthorized401("device exists with other credentials") from None
        status = "assigned"
    return {
        "registrationId": registration_id,
        "status": status,
        "assignedHub": hub.settings.resolved_public_host_name(),
        "deviceId": registration_id,
        "enrollmentGroupId": group_id,
    }


def install(app: FastAPI, hub: Hub) -> None:
    app.include_router(router)
