"""POST /devices/query: IoT Hub's query language with x-ms-continuation paging."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Response

from cloud_hub.api import call_service
from cloud_hub.auth import get_hub, require
from cloud_hub.errors import InvalidInput
from cloud_hub.hub import Hub
from cloud_hub.tokens import NEED_TWIN_READ
from cloud_hub.twin_query import Queries

router = APIRouter(tags=["query"])


@router.post(
    "/devices/query",
    dependencies=[Depends(require(NEED_TWIN_READ))],
    summary="Query device or module twins",
)
async def query_devices(
    response: Response,
    body: dict[str, Any] = Body(
        ..., examples=[{"query": "SELECT * FROM devices WHERE tags.location.region = 'west'"}]
    ),
    max_items: int = Header(100, alias="x-ms-max-item-count", ge=1, le=10_000),
    continuation: str | None = Header(None, alias="x-ms-continuation"),
    hub: Hub = Depends(get_hub),
) -> list[Any]:
    text = body.get("query")
    if not isinstance(text, str):
        raise InvalidInput("query must be a string", path="query")
    page = await call_service(Queries(hub.db).run, text, max_items, continuation)
    response.headers["x-ms-item-type"] = page.item_type
    if page.continuation:
        response.headers["x-ms-continuation"] = page.continuation
    return page.items


def install(app: FastAPI, hub: Hub) -> None:
    app.include_router(router)
