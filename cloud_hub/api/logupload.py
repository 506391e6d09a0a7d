"""Where ``$edgeAgent``'s ``uploadModuleLogs`` sends module logs (IoT Edge uses a blob SAS URL).

``POST /devices/{id}/logUploads`` (registry read) hands out a one-device upload URL with a random
capability token (valid for an hour); the agent PUTs each module's logs to
``/logUploads/{token}?module=<name>``; ``GET /devices/{id}/logUploads[/{name}]`` lists and reads
them. Files live under ``<data_dir>/uploaded-logs/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response

from cloud_hub.auth import get_hub, require
from cloud_hub.errors import DeviceNotFound, HubError, InvalidInput, NotFound
from cloud_hub.services import Hub
from cloud_hub.tokens import SCOPE_REGISTRY_READ

router = APIRouter(tags=["logs"])
read = [Depends(require(SCOPE_REGISTRY_READ))]
_lock = threading.Lock()
_NAME = re.compile(r"^[A-Za-z0-9$][A-Za-z0-9._$-]{0,127}$")
TTL_SECS = 3600
MAX_BYTES = 64 * 1024 * 1024


class Unauthorized401(HubError):
    status = 401
    code = "Unauthorized"


class TooLarge(HubError):
    status = 413
    code = "RequestEntityTooLarge"


def _root(hub: Hub) -> Path:
    return Path(hub.settings.data_dir) / "uploaded-logs"


def _device_dir(hub: Hub, device_id: str) -> Path:
    return _root(hub) / hashlib.sha256(device_id.encode("utf-8", "replace")).hexdigest()[:32]


def _tokens(hub: Hub) -> tuple[Path, dict[str, Any]]:
    path = _root(hub) / "tokens.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    now = time.time()
    return path, {k: v for k, v in data.items() if isinstance(v, dict) and v.get("exp", 0) > now}


@router.post("/devices/{device_id}/logUploads", dependencies=read, summary="Get a log upload URL")
def new_upload(device_id: str, request: Request, hub: Hub = Depends(get_hub)) -> dict[str, Any]:
    if not hub.registry.device_exists(device_id):
        raise DeviceNotFound(f"device {device_id!r} not found")
    token = secrets.token_urlsafe(24)
    with _lock:
        path, tokens = _tokens(hub)
        tokens[token] = {"device": device_id, "exp": time.time() + TTL_SECS}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(tokens))
        os.replace(tmp, path)
    base = str(request.base_url).rstrip("/")
    return {"sasUrl": f"{base}/logUploads/{token}", "expiresInSeconds": TTL_SECS}


@router.put("/logUploads/{token}", status_code=201, summary="Upload one module's logs")
async def upload(
    token: str, request: Request, module: str = Query(...), hub: Hub = Depends(get_hub)
) -> dict[str, Any]:
    _path, tokens = _tokens(hub)
    entry = tokens.get(token)
    if entry is None:
        raise Unauthorized401("unknown or expired upload token")
    if not _NAME.match(module):
        raise InvalidInput("invalid module name", path="module")
    body = await request.body()
    if len(body) > MAX_BYTES:
        raise TooLarge(f"log upload over {MAX_BYTES} bytes")
    gz = body[:2] == b"\x1f\x8b"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{module}-{stamp}.json" + (".gz" if gz else "")
    target = _device_dir(hub, entry["device"])
    target.mkdir(parents=True, exist_ok=True)
    (target / name).write_bytes(body)
    return {"name": name, "bytes": len(body)}


@router.get("/devices/{device_id}/logUploads", dependencies=read, summary="List uploaded logs")
def list_uploads(device_id: str, hub: Hub = Depends(get_hub)) -> list[dict[str, Any]]:
    folder = _device_dir(hub, device_id)
    if not folder.is_dir():
        return []
    return [
        {"name": p.name, "module": p.name.rsplit("-", 1)[0], "bytes": p.stat().st_size}
        for p in sorted(folder.iterdir())
    ]


@router.get(
    "/devices/{device_id}/logUploads/{name}", dependencies=read, summary="Read an uploaded log"
)
def get_upload(device_id: str, name: str, hub: Hub = Depends(get_hub)) -> Response:
    if not _NAME.match(name):
        raise NotFound("no such upload")
    path = _device_dir(hub, device_id) / name
    if not path.is_file():
        raise NotFound("no such upload")
    return Response(path.read_bytes(), media_type="application/octet-stream")


def install(app: FastAPI, hub: Hub) -> None:
    app.include_router(router)
