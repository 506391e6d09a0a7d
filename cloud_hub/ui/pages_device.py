"""The device page: identity and keys, the twin, editing tags and desired properties, the edge
modules table (live), module restart and logs, direct methods, and the live telemetry view."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select

from cloud_hub import events as ev
from cloud_hub.api import call_service
from cloud_hub.api.messaging import invoke_method
from cloud_hub.errors import HubError, InvalidInput, PreconditionFailed
from cloud_hub.hub import Hub
from cloud_hub.mqtt.tables import MessageRow
from cloud_hub.tokens import SCOPE_REGISTRY_WRITE
from cloud_hub.ui.streams import change_events, message_events, sse_response
from cloud_hub.ui.views import editable_twin, mask, module_rows, twin_tree
from cloud_hub.ui.web import (
    UiRefused,
    UiUser,
    current_user,
    is_fragment,
    render,
    ui_state,
    write_form,
)

router = APIRouter(prefix="/ui/devices")
AGENT = "$edgeAgent"
LIVE_BACKLOG = 50


def _device_view(hub: Hub, device_id: str) -> dict[str, Any]:
    device = hub.registry.get_device(device_id)
    twin = hub.twins.get_twin(device_id)
    edge = bool((device.get("capabilities") or {}).get("iotEdge"))
    agent = hub.twins.get_twin(device_id, AGENT) if edge else None
    keys = (device.get("authentication") or {}).get("symmetricKey") or {}
    props = twin.get("properties") or {}
    return {
        "device": device,
        "twin": twin,
        "edge": edge,
        "keys": [
            {
                "name": name,
                "value": keys.get(f"{name}Key") or "",
                "masked": mask(keys.get(f"{name}Key")),
            }
            for name in ("primary", "secondary")
        ],
        "tags_tree": twin_tree(twin.get("tags") or {}, {}),
        "desired_tree": twin_tree(props.get("desired") or {}),
        "reported_tree": twin_tree(props.get("reported") or {}),
        "editable": json.dumps(editable_twin(twin), indent=2, sort_keys=True),
        "modules": _modules(agent),
        "agent_modules": _agent_module_names(agent),
    }


def _agent_module_names(agent: dict[str, Any] | None) -> list[str]:
    reported = ((agent or {}).get("properties") or {}).get("reported") or {}
    return sorted(reported.get("modules") or {})


def _modules(agent: dict[str, Any] | None) -> list[Any]:
    if agent is None:
        return []
    props = agent.get("properties") or {}
    return module_rows(props.get("reported") or {}, props.get("desired") or {})


async def _page(
    request: Request, user: UiUser, device_id: str, status_code: int = 200, **extra: Any
) -> Response:
    view = await call_service(_device_view, ui_state(request).hub, device_id)
    if "editable" in extra:
        view.pop("editable")
    return render(
        request, "device.html", user, status_code=status_code, nav="fleet", **view, **extra
    )


@router.get("/{device_id}")
async def device_page(
    request: Request, device_id: str, saved: str = "", user: UiUser = Depends(current_user)
) -> Response:
    try:
        return await _page(request, user, device_id, notice=saved)
    except HubError as exc:
        return render(request, "error.html", user, status_code=exc.status, message=exc.message)


@router.get("/{device_id}/modules")
async def modules_fragment(
    request: Request, device_id: str, user: UiUser = Depends(current_user)
) -> Response:
    hub = ui_state(request).hub
    try:
        agent = await call_service(hub.twins.get_twin, device_id, AGENT)
        device = await call_service(hub.registry.get_device, device_id)
    except HubError as exc:
        raise UiRefused(exc.status, exc.message) from None
    return render(
        request,
        "_modules.html",
        user,
        modules=_modules(agent),
        device=device,
    )


@router.get("/{device_id}/state")
async def state_fragment(
    request: Request, device_id: str, user: UiUser = Depends(current_user)
) -> Response:
    try:
        device = await call_service(ui_state(request).hub.registry.get_device, device_id)
    except HubError as exc:
        raise UiRefused(exc.status, exc.message) from None
    return render(request, "_device_state.html", user, device=device)


@router.get("/{device_id}/stream")
async def device_stream(
    request: Request, device_id: str, _user: UiUser = Depends(current_user)
) -> Response:
    types = (ev.TwinReportedChanged, ev.ConnectionStateChanged, ev.TwinDesiredChanged)
    state = ui_state(request)
    return sse_response(
        change_events(
            request,
            state.hub,
            state.stopping,
            types,
            lambda e: e.device_id == device_id,
            "device",
        )
    )


def _parse_twin_document(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", path="body"
        ) from None
    if not isinstance(doc, dict):
        raise InvalidInput("must be a JSON object with tags and properties.desired", path="body")
    unknown = sorted(set(doc) - {"tags", "properties"})
    if unknown:
        raise InvalidInput("only tags and properties.desired can be edited", path=unknown[0])
    props = doc.get("properties")
    if props is not None and (not isinstance(props, dict) or set(props) - {"desired"}):
        raise InvalidInput("only properties.desired can be edited", path="properties")
    return doc


@router.post("/{device_id}/twin")
async def save_twin(
    request: Request, device_id: str, user: UiUser = Depends(current_user)
) -> Response:
    form = await write_form(request, user, SCOPE_REGISTRY_WRITE)
    text = form.get("document", "")
    hub = ui_state(request).hub
    try:
        doc = _parse_twin_document(text)
        desired = (doc.get("properties") or {}).get("desired") or {}
        body = {"tags": doc.get("tags") or {}, "properties": {"desired": desired}}
        await call_service(hub.twins.replace_twin, device_id, None, body, form.get("etag") or "*")
    except PreconditionFailed:
        return await _page(
            request,
            user,
            device_id,
            status_code=412,
            editable=text,
            form_etag=form.get("etag"),  # saving again fails again until the page is reloaded
            twin_error="The twin changed meanwhile: reload the page to edit the newest version.",
            stale=True,
        )
    except HubError as exc:
        where = f" (at {exc.path})" if exc.path else ""
        return await _page(
            request,
            user,
            device_id,
            status_code=exc.status,
            editable=text,
            twin_error=f"{exc.message}{where}",
        )
    return RedirectResponse(f"/ui/devices/{device_id}?saved=twin", status_code=303)


@router.post("/{device_id}/rotate")
async def rotate(
    request: Request, device_id: str, user: UiUser = Depends(current_user)
) -> Response:
    form = await write_form(request, user, SCOPE_REGISTRY_WRITE)
    which = form.get("which", "")
    try:
        await call_service(ui_state(request).hub.registry.rotate_key, device_id, which)
    except HubError as exc:
        return render(request, "error.html", user, status_code=exc.status, message=exc.message)
    return RedirectResponse(f"/ui/devices/{device_id}?saved=key-{which}", status_code=303)


async def _invoke(
    request: Request, device_id: str, module_id: str | None, body: dict[str, Any]
) -> tuple[int, Any]:
    """(status, JSON) of a direct method call as the REST API makes it."""
    try:
        result = await call_service(
            invoke_method, request.app.state.messaging, device_id, module_id, body
        )
    except HubError as exc:
        return exc.status, exc.to_json()
    return 200, result


def _method_answer(
    request: Request, user: UiUser, device_id: str, status: int, result: Any
) -> Response:
    if is_fragment(request):
        return render(request, "_method_result.html", user, status=status, result=result)
    return RedirectResponse(f"/ui/devices/{device_id}", status_code=303)


@router.post("/{device_id}/method")
async def direct_method(
    request: Request, device_id: str, user: UiUser = Depends(current_user)
) -> Response:
    form = await write_form(request, user, SCOPE_REGISTRY_WRITE)
    payload_text = form.get("payload", "").strip() or "null"
    try:
        payload = json.loads(payload_text)
        timeout = float(form.get("timeout") or 30)
    except ValueError as exc:
        return _method_answer(request, user, device_id, 400, {"message": f"payload: {exc}"})
    body = {
        "methodName": form.get("method", ""),
        "payload": payload,
        "responseTimeoutInSeconds": timeout,
    }
    module = form.get("module") or None
    status, result = await _invoke(request, device_id, module, body)
    return _method_answer(request, user, device_id, status, result)


@router.post("/{device_id}/modules/{module_id}/restart")
async def restart_module(
    request: Request, device_id: str, module_id: str, user: UiUser = Depends(current_user)
) -> Response:
    await write_form(request, user, SCOPE_REGISTRY_WRITE)
    body = {
        "methodName": "restartModule",
        "payload": {"schemaVersion": "1.0", "id": module_id},
        "responseTimeoutInSeconds": 30,
    }
    status, result = await _invoke(request, device_id, AGENT, body)
    return _method_answer(request, user, device_id, status, result)


MAX_LOG_TAIL = 1000


def log_lines(result: Any) -> list[dict[str, str]]:
    """The records of a ``getModuleLogs`` answer (IoT Edge's JSON content type), oldest first."""
    payload = result.get("payload") if isinstance(result, dict) else None
    lines: list[dict[str, str]] = []
    for item in payload if isinstance(payload, list) else []:
        records = item.get("payload") if isinstance(item, dict) else None
        for record in records if isinstance(records, list) else []:
            if isinstance(record, dict):
                lines.append(
                    {
                        "timestamp": str(record.get("timestamp", "")),
                        "stream": str(record.get("stream", "")),
                        "content": str(record.get("content", "")),
                    }
                )
    return lines


@router.get("/{device_id}/modules/{module_id}/logs")
async def module_logs(
    request: Request,
    device_id: str,
    module_id: str,
    tail: int = 100,
    follow: bool = False,
    user: UiUser = Depends(current_user),
) -> Response:
    """The last ``tail`` lines of a module's log through ``$edgeAgent``'s ``getModuleLogs``; with
    ``follow`` the fragment fetches itself again every two seconds."""
    user.need(SCOPE_REGISTRY_WRITE)  # a direct method call, as the REST API scopes them
    tail = max(1, min(tail, MAX_LOG_TAIL))
    body = {
        "methodName": "getModuleLogs",
        "payload": {
            "schemaVersion": "1.0",
            "items": [{"id": re.escape(module_id), "filter": {"tail": tail}}],
            "encoding": "none",
            "contentType": "json",
        },
        "responseTimeoutInSeconds": 15,
    }
    status, result = await _invoke(request, device_id, AGENT, body)
    method_status = result.get("status", status) if isinstance(result, dict) else status
    error = None
    if status >= 300 or not isinstance(method_status, int) or method_status >= 300:
        error = _log_error(status, result)
    return render(
        request,
        "_module_logs.html",
        user,
        device_id=device_id,
        module_id=module_id,
        tail=tail,
        follow=follow,
        lines=log_lines(result) if error is None else [],
        error=error,
    )


def _log_error(status: int, result: Any) -> str:
    if isinstance(result, dict):
        payload = result.get("payload")
        if isinstance(payload, dict) and payload.get("message"):
            return str(payload["message"])
        if result.get("Message") or result.get("message"):
            return str(result.get("Message") or result.get("message"))
    return f"the device answered with status {status}"


def _last_seq(hub: Hub, device_id: str) -> int:
    hub.registry.get_device(device_id)
    with hub.db.read_conn() as conn:
        last = conn.execute(
            select(func.max(MessageRow.seq)).where(MessageRow.device_id == device_id)
        ).scalar()
    return int(last or 0)


@router.get("/{device_id}/live")
async def live_page(
    request: Request, device_id: str, field: str = "", user: UiUser = Depends(current_user)
) -> Response:
    try:
        device = await call_service(ui_state(request).hub.registry.get_device, device_id)
    except HubError as exc:
        return render(request, "error.html", user, status_code=exc.status, message=exc.message)
    return render(request, "live.html", user, nav="fleet", device=device, field=field)


@router.get("/{device_id}/live/stream")
async def live_stream(
    request: Request, device_id: str, _user: UiUser = Depends(current_user)
) -> Response:
    state = ui_state(request)
    last = await call_service(_last_seq, state.hub, device_id)
    since = str(max(0, last - LIVE_BACKLOG))
    return sse_response(message_events(request, state.hub, state.stopping, device_id, since))
