"""REST routes where ``$edgeAgent``'s ``uploadModuleLogs`` sends module logs.

``POST /devices/{id}/logUploads`` (registry read) hands out a one-device upload URL with a random
capability token (valid for an hour); the agent PUTs each module's logs to
``/logUploads/{token}?module=<name>``; ``GET /devices/{id}/logUploads[/{name}]`` lists and reads
them. Tokens (hashed) and logs are in the database (``cloud_hub.logstore.LogUploads``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from cloud_hub.auth import get_hub, require
from cloud_hub.errors import NotFound
from cloud_hub.hub import Hub
from cloud_hub.logstore import MAX_BYTES, TTL_SECS, TooLarge
from cloud_hub.tokens import SCOPE_REGISTRY_READ
from edgefleet.digits import ascii_uint

router = APIRouter(tags=["logs"])
read = [Depends(require(SCOPE_REGISTRY_READ))]


@router.post("/devices/{device_id}/logUploads", dependencies=read, summary="Get a log upload URL")
def new_upload(device_id: str, request: Request, hub: Hub = Depends(get_hub)) -> dict[str, Any]:
    token = hub.log_uploads.new_token(device_id)
    base = str(request.base_url).rstrip("/")
    return {"sasUrl": f"{base}/logUploads/{token}", "expiresInSeconds": TTL_SECS}


@router.put("/logUploads/{token}", status_code=201, summary="Upload one module's logs")
async def upload(
    token: str, request: Request, module: str = Query(...), hub: Hub = Depends(get_hub)
) -> dict[str, Any]:
    await run_in_threadpool(hub.log_uploads.device_for, token)  # refuse before reading the body
    declared = request.headers.get("content-length", "")
    if (ascii_uint(declared) or 0) > MAX_BYTES:
        raise TooLarge(f"log upload over {MAX_BYTES} bytes", path="body")
    body = await request.body()
    return await run_in_threadpool(hub.log_uploads.store, token, module, body)


@router.get("/devices/{device_id}/logUploads", dependencies=read, summary="List uploaded logs")
def list_uploads(device_id: str, hub: Hub = Depends(get_hub)) -> list[dict[str, Any]]:
    return hub.log_uploads.uploads(device_id)


@router.get(
    "/devices/{device_id}/logUploads/{name}", dependencies=read, summary="Read an uploaded log"
)
def get_upload(device_id: str, name: str, hub: Hub = Depends(get_hub)) -> Response:
    if len(name) > 192:
        raise NotFound("no such upload", path="name")
    content = hub.log_uploads.read(device_id, name)
    return Response(content, media_type="application/octet-stream")


def install(app: FastAPI, hub: Hub) -> None:
    app.include_router(router)
