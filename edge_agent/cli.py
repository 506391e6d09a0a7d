"""CLI: ``edgefleet agent run``, ``edgefleet logs`` and ``edgefleet bench agent``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from edgefleet.cli_apps import agent_app, app, fail


@agent_app.command("run")
def agent_run(
    config: Path = typer.Option(..., "--config", "-c", help="Agent config file (YAML or JSON)."),
) -> None:
    """Run the edge agent daemon in the foreground (SIGTERM stops it cleanly)."""
    from edge_agent.foreground import run_daemon

    code = run_daemon(config)
    if code:
        raise typer.Exit(code)


def _hub_options(hub: str | None, token: str | None) -> tuple[str, dict[str, str]]:
    url = hub or os.environ.get("EDGEFLEET_HUB")
    if not url:
        fail("no hub: pass --hub URL or set EDGEFLEET_HUB")
    tok = token or os.environ.get("EDGEFLEET_TOKEN")
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    return url.rstrip("/"), headers


def invoke_agent_method(
    hub: str, headers: dict[str, str], device: str, method: str, payload: Any, timeout: int = 30
) -> Any:
    """Call a $edgeAgent direct method through the hub's methods endpoint."""
    import httpx

    url = f"{hub}/twins/{device}/modules/$edgeAgent/methods"
    body = {
        "methodName": method,
        "payload": payload,
        "responseTimeoutInSeconds": timeout,
        "connectTimeoutInSeconds": 10,
    }
    try:
        r = httpx.post(url, json=body, headers=headers, timeout=timeout + 15)
    except httpx.HTTPError as exc:
        fail(f"hub {hub} unreachable: {exc}")
    if r.status_code >= 400:
        fail(f"{method} failed: HTTP {r.status_code} {r.text[:200]}")
    data = r.json()
    if int(data.get("status", 200)) >= 400:
        fail(f"{method} failed: {data.get('status')} {json.dumps(data.get('payload'))}")
    return data.get("payload")


@app.command("logs")
def logs(
    device: str = typer.Argument(..., help="Device id."),
    module: str = typer.Argument(..., help="Module name (a regex as in IoT Edge)."),
    tail: int | None = typer.Option(None, "--tail", "-n", help="Last N lines."),
    since: str | None = typer.Option(None, help="Unix time, RFC 3339 or a duration (15m)."),
    until: str | None = typer.Option(None, help="Unix time, RFC 3339 or a duration."),
    regex: str | None = typer.Option(None, help="Only lines matching this regex."),
    hub: str | None = typer.Option(None, help="Hub URL (or EDGEFLEET_HUB)."),
    token: str | None = typer.Option(None, help="Bearer token (or EDGEFLEET_TOKEN)."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON log records."),
    upload: bool = typer.Option(
        False, "--upload", help="Upload the logs to the hub (uploadModuleLogs) instead."
    ),
) -> None:
    """Show a module's logs from an edge device (the $edgeAgent getModuleLogs method)."""
    url, headers = _hub_options(hub, token)
    flt: dict[str, Any] = {}
    for key, value in (("tail", tail), ("since", since), ("until", until), ("regex", regex)):
        if value is not None:
            flt[key] = value
    payload: dict[str, Any] = {
        "schemaVersion": "1.0",
        "items": [{"id": module, "filter": flt}],
        "encoding": "none",
        "contentType": "json",
    }
    if upload:
        _upload_logs(url, headers, device, payload, as_json)
        return
    result = invoke_agent_method(url, headers, device, "getModuleLogs", payload)
    if as_json:
        typer.echo(json.dumps(result))
        return
    for item in result or []:
        for rec in item.get("payload") or []:
            typer.echo(rec["content"])


def _upload_logs(
    url: str, headers: dict[str, str], device: str, payload: dict[str, Any], as_json: bool
) -> None:
    import time

    import httpx

    try:
        r = httpx.post(f"{url}/devices/{device}/logUploads", headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        fail(f"hub {url} unreachable: {exc}")
    if r.status_code >= 400:
        fail(f"no upload URL: HTTP {r.status_code} {r.text[:200]}")
    payload = {**payload, "sasUrl": r.json()["sasUrl"], "encoding": "gzip"}
    task = invoke_agent_method(url, headers, device, "uploadModuleLogs", payload)
    deadline = time.monotonic() + 120
    while task.get("status") in ("NotStarted", "Running") and time.monotonic() < deadline:
        time.sleep(0.5)
        status_payload = {"schemaVersion": "1.0", "correlationId": task["correlationId"]}
        task = invoke_agent_method(url, headers, device, "getTaskStatus", status_payload)
    if task.get("status") != "Completed":
        fail(f"upload {task.get('status')}: {task.get('message', '')}")
    listing = httpx.get(f"{url}/devices/{device}/logUploads", headers=headers, timeout=30).json()
    if as_json:
        typer.echo(json.dumps({"task": task, "uploads": listing}))
        return
    for item in listing:
        typer.echo(f"{item['name']}\t{item['bytes']} bytes")
