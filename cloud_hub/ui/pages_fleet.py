"""The fleet page: counts, the filtered device table (keyset pages of the query engine), and the
SSE stream that tells an open page to refresh its live part."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from cloud_hub import events as ev
from cloud_hub.api import call_service
from cloud_hub.errors import InvalidInput
from cloud_hub.ui.fleet_data import PAGE_SIZE, CountsCache, fleet_page
from cloud_hub.ui.streams import change_events, sse_response
from cloud_hub.ui.views import FilterError, fleet_query
from cloud_hub.ui.web import UiUser, current_user, is_fragment, render, ui_state

router = APIRouter(prefix="/ui")
TRAIL_SEPARATOR = "~"  # never in a (urlsafe base64) continuation token
FLEET_EVENTS = (
    ev.ConnectionStateChanged,
    ev.TwinReportedChanged,
    ev.TwinTagsChanged,
    ev.DeviceCreated,
    ev.DeviceUpdated,
    ev.DeviceDeleted,
)


def _counts(request: Request) -> CountsCache:
    state = ui_state(request)
    cache = state.hub.extensions.get("ui-counts")
    if cache is None:
        cache = state.hub.extensions["ui-counts"] = CountsCache(state.hub.db)
    return cache


def _fleet_wanted(event: Any) -> bool:
    if isinstance(event, ev.TwinReportedChanged):
        return event.module_id in (None, "$edgeAgent")
    return not isinstance(event, ev.ConnectionStateChanged) or event.module_id is None


async def _fleet_context(request: Request, q: str, page: str, trail: str) -> dict[str, Any]:
    hub = ui_state(request).hub
    counts = await call_service(_counts(request).get)
    query_text, error = fleet_query(q)
    rows: list[Any] = []
    next_token = None
    if error is None:
        try:
            result = await call_service(fleet_page, hub, query_text, page or None)
            rows, next_token = result.rows, result.next_token
        except InvalidInput as exc:  # e.g. a continuation of another query
            error = FilterError(exc.message, 1)
    trail_list = [t for t in trail.split(TRAIL_SEPARATOR) if t] if trail else []
    return {
        "q": q,
        "page": page,
        "trail": trail,
        "rows": rows,
        "counts": counts,
        "error": error,
        "next_token": next_token,
        "next_trail": TRAIL_SEPARATOR.join([*trail_list, page or "-"]),
        "prev_token": (trail_list[-1] if trail_list else None),
        "prev_trail": TRAIL_SEPARATOR.join(trail_list[:-1]),
        "page_number": len(trail_list) + 1,
        "page_size": PAGE_SIZE,
    }


@router.get("")
@router.get("/")
async def fleet(
    request: Request,
    q: str = "",
    page: str = "",
    trail: str = "",
    user: UiUser = Depends(current_user),
) -> Response:
    context = await _fleet_context(request, q, "" if page == "-" else page, trail)
    template = "_fleet_live.html" if is_fragment(request) else "fleet.html"
    status = 400 if context["error"] and not is_fragment(request) else 200
    return render(request, template, user, status_code=status, nav="fleet", **context)


@router.get("/fleet/stream")
async def fleet_stream(request: Request, _user: UiUser = Depends(current_user)) -> Response:
    state = ui_state(request)
    return sse_response(
        change_events(request, state.hub, state.stopping, FLEET_EVENTS, _fleet_wanted, "fleet")
    )
