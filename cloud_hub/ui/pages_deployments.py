"""The deployments pages: configurations with metrics and rollout progress, rollout control,
creating a deployment from a manifest file (checked by ``edgefleet.deployment_check`` before it
is sent), and the devices a deployment targets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from cloud_hub.api import call_service
from cloud_hub.client_cli.deployment_view import (
    batch_progress,
    configuration_body,
    kind,
    module_names,
    parse_pairs,
    rollout_error,
    rollout_status,
    system_counts,
)
from cloud_hub.deployments.api import put_configuration, rollout_command
from cloud_hub.deployments.configuration import condition_error, metric_query_error
from cloud_hub.deployments.store import Configurations
from cloud_hub.errors import HubError
from cloud_hub.hub import Hub
from cloud_hub.tokens import SCOPE_DEPLOY
from cloud_hub.ui.fleet_data import fleet_page
from cloud_hub.ui.web import UiUser, current_user, is_fragment, render, ui_state, write_form
from edgefleet.deployment_check import check_deployment

router = APIRouter(prefix="/ui/deployments")
ROLLOUT_ACTIONS = ("pause", "resume", "abort")


@dataclass(frozen=True)
class Problem:
    path: str
    message: str


def _configurations(hub: Hub) -> Configurations:
    return hub.extensions["deployments"].configurations


def summary(config: dict[str, Any]) -> dict[str, Any]:
    """What the pages show of one configuration."""
    counts = system_counts(config)
    custom = (config.get("metrics") or {}).get("results") or {}
    status = rollout_status(config)
    return {
        "id": config.get("id"),
        "priority": config.get("priority"),
        "kind": kind(config),
        "target": config.get("targetCondition") or "",
        "labels": config.get("labels") or {},
        "counts": counts,
        "scale": max(1, counts["targeted"]),
        "custom": dict(sorted(custom.items())),
        "custom_queries": (config.get("metrics") or {}).get("queries") or {},
        "modules": module_names(config),
        "rollout": status,
        "batches": batch_progress(config),
        "created": config.get("createdTimeUtc") or "",
        "etag": config.get("etag") or "",
    }


@router.get("")
async def deployments(request: Request, user: UiUser = Depends(current_user)) -> Response:
    configs = await call_service(_configurations(ui_state(request).hub).list_json, 1000)
    configs.sort(key=lambda c: (-int(c.get("priority") or 0), str(c.get("id"))))
    template = "_deployments_table.html" if is_fragment(request) else "deployments.html"
    return render(request, template, user, nav="deployments", configs=[summary(c) for c in configs])


def _targeted(hub: Hub, config: dict[str, Any]) -> Any:
    condition = config.get("targetCondition") or ""
    if not condition.strip():
        return None
    query = f"SELECT * FROM devices WHERE capabilities.iotEdge = true AND ({condition})"
    return fleet_page(hub, query, None)


async def _detail(request: Request, user: UiUser, config_id: str, **extra: Any) -> Response:
    hub = ui_state(request).hub
    try:
        config = await call_service(_configurations(hub).get, config_id)
    except HubError as exc:
        return render(request, "error.html", user, status_code=exc.status, message=exc.message)
    targeted = await call_service(_targeted, hub, config)
    template = "_deployment_live.html" if is_fragment(request) else "deployment.html"
    return render(
        request,
        template,
        user,
        nav="deployments",
        c=summary(config),
        targeted=targeted,
        raw=json.dumps(config.get("content"), indent=2),
        **extra,
    )


@router.get("/new")
async def new_form(request: Request, user: UiUser = Depends(current_user)) -> Response:
    return render(request, "deployment_new.html", user, nav="deployments", form={}, problems=[])


def _read_manifest(text: str) -> tuple[Any, list[Problem]]:
    if not text.strip():
        return None, [Problem("", "choose a manifest file (JSON or YAML)")]
    try:
        return json.loads(text), []
    except json.JSONDecodeError as exc:
        json_error = f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    try:
        return yaml.safe_load(text), []
    except yaml.YAMLError:
        return None, [Problem("", f"neither JSON nor YAML (JSON: {json_error})")]


def check_form(form: dict[str, str]) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The PUT body a creation form stands for, or the problems found, each with its path."""
    problems: list[Problem] = []
    config_id = form.get("id", "").strip()
    if not config_id:
        problems.append(Problem("id", "a deployment needs an id"))
    doc, read_problems = _read_manifest(form.get("manifest", ""))
    problems += read_problems
    layered = {"base": False, "layered": True}.get(form.get("kind", ""))
    if doc is not None:
        verdict = check_deployment(doc, layered=layered)
        problems += [Problem(f.path or "(document)", f.message) for f in verdict.errors]
    condition = form.get("targetCondition", "")
    if condition_error(condition):
        problems.append(Problem("targetCondition", condition_error(condition)))
    try:
        priority = int(form.get("priority") or 0)
    except ValueError:
        problems.append(Problem("priority", "must be a whole number"))
        priority = 0
    try:
        labels = parse_pairs(_lines(form.get("labels", "")), "label")
        metrics = parse_pairs(_lines(form.get("metrics", "")), "metric")
    except ValueError as exc:
        problems.append(Problem("labels/metrics", str(exc)))
        labels, metrics = {}, {}
    for name, query in metrics.items():
        if metric_query_error(query):
            problems.append(Problem(f"metrics.queries.{name}", metric_query_error(query)))
    rollout = None
    if form.get("rollout", "").strip():
        rollout, rollout_problems = _read_manifest(form["rollout"])
        problems += [Problem("rollout", p.message) for p in rollout_problems]
        if rollout is not None and rollout_error(rollout):
            problems.append(Problem("rollout", rollout_error(rollout)))
    if problems or not isinstance(doc, dict):
        return None, problems
    body = configuration_body(
        config_id,
        doc,
        target_condition=condition,
        priority=priority,
        labels=labels,
        metrics=metrics,
        rollout=rollout,
    )
    return body, []


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


@router.post("/check")
async def check(request: Request, user: UiUser = Depends(current_user)) -> Response:
    form = await write_form(request, user, SCOPE_DEPLOY)
    _body, problems = check_form(form)
    return render(request, "_problems.html", user, problems=problems, checked=True)


@router.post("/new")
async def create(request: Request, user: UiUser = Depends(current_user)) -> Response:
    form = await write_form(request, user, SCOPE_DEPLOY)
    body, problems = check_form(form)
    if body is not None:
        try:
            await call_service(put_configuration, ui_state(request).hub, body["id"], body, None)
        except HubError as exc:
            problems = [Problem(exc.path or "", exc.message)]
        else:
            return RedirectResponse(f"/ui/deployments/{body['id']}", status_code=303)
    return render(
        request,
        "deployment_new.html",
        user,
        status_code=400,
        nav="deployments",
        form=form,
        problems=problems,
    )


@router.get("/{config_id}")
async def detail(
    request: Request, config_id: str, user: UiUser = Depends(current_user)
) -> Response:
    return await _detail(request, user, config_id)


@router.post("/{config_id}/rollout/{action}")
async def rollout_action(
    request: Request, config_id: str, action: str, user: UiUser = Depends(current_user)
) -> Response:
    await write_form(request, user, SCOPE_DEPLOY)
    if action not in ROLLOUT_ACTIONS:
        return render(request, "error.html", user, status_code=404, message="no such action")
    try:
        await call_service(rollout_command, ui_state(request).hub, config_id, action)
    except HubError as exc:
        return await _detail(request, user, config_id, action_error=exc.message)
    if is_fragment(request):
        return await _detail(request, user, config_id)
    return RedirectResponse(f"/ui/deployments/{config_id}", status_code=303)
