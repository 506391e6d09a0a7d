"""``edgefleet deployment create|list|show|status|pause|resume|abort|delete|history``: fleet
deployments (IoT Hub configurations) on a running hub."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from cloud_hub.client_cli import deployment_view as view
from cloud_hub.client_cli.common import (
    HUB_OPT,
    JSON_OPT,
    TOKEN_OPT,
    hub_client,
    print_json,
    show_fields,
    table,
)
from cloud_hub.client_cli.deployment_files import ENV_FILE_OPT, read_document, template_variables
from edgefleet.cli_apps import deployment_app, fail
from edgefleet.deployment_check import check_deployment
from edgefleet.genconfig import genconfig
from edgefleet.hubclient import HubClient, HubClientError
from edgefleet.manifest import ManifestError

ID_ARG = typer.Argument(..., help="Configuration id.")
LIST_COLUMNS = [
    "id",
    "priority",
    "kind",
    "targetCondition",
    "targeted",
    "applied",
    "succeeded",
    "failed",
    "rollout",
]


def hub_error_text(exc: HubClientError) -> str:
    """The hub's message, led by the JSON path it names."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message: str = body["message"]
        path = body.get("path")
        if isinstance(path, str) and path and not message.startswith(path):
            message = f"{path}: {message}"
        return message
    return str(exc)


@contextmanager
def configuration_client(
    hub: str | None, token: str | None, config_id: str | None = None
) -> Iterator[HubClient]:
    """A hub client whose failures end the command with one line (404: the id not found)."""
    with hub_client(hub, token) as client:
        try:
            yield client
        except HubClientError as exc:
            if exc.status == 404 and config_id is not None:
                fail(f"configuration '{config_id}' not found")
            if exc.status == 409 and config_id is not None:
                fail(f"configuration '{config_id}' already exists")
            fail(hub_error_text(exc) if exc.status else str(exc))


def _local_body(
    config_id: str,
    content_file: Path,
    *,
    layered: bool,
    env_file: Path | None,
    target_condition: str | None,
    priority: int | None,
    labels: list[str],
    metrics: list[str],
    rollout_file: Path | None,
) -> dict[str, Any]:
    """Read and check everything on disk; print every problem with its path and exit 1."""
    doc = read_document(content_file)
    variables = template_variables(env_file)
    verdict = check_deployment(doc, layered=True if layered else None, variables=variables)
    if not verdict.valid:
        for finding in verdict.errors:
            typer.echo(f"error: {finding.path or '(document)'}: {finding.message}", err=True)
        raise typer.Exit(1)
    try:
        expanded = genconfig(doc, variables)
        label_map = view.parse_pairs(labels, "--label")
        metric_map = view.parse_pairs(metrics, "--metric")
    except (ManifestError, ValueError) as exc:
        fail(str(exc))
    rollout = None
    if rollout_file is not None:
        rollout = read_document(rollout_file)
        problem = view.rollout_error(rollout)
        if problem:
            fail(f"{rollout_file}: {problem}")
    return view.configuration_body(
        config_id,
        expanded,
        target_condition=target_condition,
        priority=priority,
        labels=label_map,
        metrics=metric_map,
        rollout=rollout,
    )


def _query_errors(client: HubClient, body: dict[str, Any]) -> list[str]:
    queries = (body.get("metrics") or {}).get("queries") or {}
    answer = client.test_queries(body.get("targetCondition") or "", queries)
    errors = []
    if answer.get("targetConditionError"):
        errors.append(f"targetCondition: {answer['targetConditionError']}")
    for name, message in (answer.get("customMetricQueryErrors") or {}).items():
        errors.append(f"metrics.queries.{name}: {message}")
    return errors


@deployment_app.command("create")
def deployment_create(
    config_id: str = ID_ARG,
    content: Path = typer.Option(
        ..., "--content", help="Deployment manifest, {content} wrapper or configuration."
    ),
    target_condition: str | None = typer.Option(
        None, "--target-condition", help="Which devices, e.g. tags.plant='3'."
    ),
    priority: int | None = typer.Option(None, "--priority", help="Higher wins (default 0)."),
    layered: bool = typer.Option(False, "--layered", help="Check the content as layered."),
    label: list[str] = typer.Option([], "--label", help="A label k=v (repeatable)."),
    metric: list[str] = typer.Option([], "--metric", help="A custom metric NAME=QUERY."),
    rollout: Path | None = typer.Option(
        None, "--rollout", help="A staged rollout object (JSON or YAML)."
    ),
    env_file: Path | None = ENV_FILE_OPT,
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Validate a deployment locally, then create it on the hub."""
    body = _local_body(
        config_id,
        content,
        layered=layered,
        env_file=env_file,
        target_condition=target_condition,
        priority=priority,
        labels=label,
        metrics=metric,
        rollout_file=rollout,
    )
    with configuration_client(hub, token, config_id) as client:
        errors = _query_errors(client, body)
        for error in errors:
            typer.echo(f"error: {error}", err=True)
        if errors:
            raise typer.Exit(1)
        config = client.put_configuration(config_id, body)
    if as_json:
        print_json(config)
        return
    row = view.list_row(config)
    typer.echo(
        f"created {row['kind']} deployment {config_id} (priority {row['priority']}, "
        f"target {row['targetCondition'] or 'all edge devices'!s}, rollout {row['rollout']})"
    )


@deployment_app.command("list")
def deployment_list(
    top: int = typer.Option(100, "--top", min=1, max=1000, help="At most this many."),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Configurations with their counts and rollout state."""
    with configuration_client(hub, token) as client:
        configs = client.list_configurations(top)
    if as_json:
        print_json(configs)
    else:
        table([view.list_row(c) for c in configs], LIST_COLUMNS, "deployments")


@deployment_app.command("show")
def deployment_show(
    config_id: str = ID_ARG,
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """A configuration with its metrics (system and custom) and rollout status."""
    with configuration_client(hub, token, config_id) as client:
        config = client.get_configuration(config_id)
    if as_json:
        print_json(config)
        return
    summary = {k: v for k, v in config.items() if k not in ("content", "systemMetrics", "metrics")}
    summary["kind"] = view.kind(config)
    summary["modules"] = ", ".join(view.module_names(config))
    show_fields(summary, f"deployment {config_id}")
    _print_status(config)


def _print_status(config: dict[str, Any]) -> None:
    from rich.console import Console

    Console().print(_status_view(config))


def _status_view(config: dict[str, Any]) -> Any:
    """Metrics tables, rollout bars and the abort reason as one rich renderable."""
    from rich.console import Group
    from rich.progress import BarColumn, Progress, TextColumn
    from rich.table import Table
    from rich.text import Text

    counts = view.system_counts(config)
    parts: list[Any] = []
    overall = Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
    )
    targeted = max(counts["targeted"], 1)
    for name in ("applied", "succeeded", "failed"):
        overall.add_task(name, total=targeted, completed=counts[name])
    parts.append(Text(f"{config.get('id')}: {counts['targeted']} devices targeted", style="bold"))
    parts.append(overall)
    custom = (config.get("metrics") or {}).get("results") or {}
    if custom:
        metrics = Table(title="custom metrics")
        metrics.add_column("metric")
        metrics.add_column("count", justify="right")
        for name, value in custom.items():
            metrics.add_row(str(name), str(value))
        parts.append(metrics)
    status = view.rollout_status(config)
    if status is not None:
        parts.append(Text(f"rollout: {view.rollout_text(config)}"))
        batches = Progress(
            TextColumn("batch {task.fields[number]} ({task.fields[state]})"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} decided"),
        )
        for bar in view.batch_progress(config):
            batches.add_task(
                "",
                total=max(bar.size, 1),
                completed=bar.decided,
                number=bar.number,
                state=bar.state,
            )
        parts.append(batches)
        if status.get("reason"):
            parts.append(Text(f"reason: {status['reason']}", style="red"))
    return Group(*parts)


@deployment_app.command("status")
def deployment_status(
    config_id: str = ID_ARG,
    watch: bool = typer.Option(False, "--watch", help="Refresh until the rollout ends."),
    interval: float = typer.Option(2.0, "--interval", min=0.05, help="Seconds between refreshes."),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = typer.Option(False, "--json", help="JSON (one object a line with --watch)."),
) -> None:
    """Metrics and rollout progress; --watch follows a rollout live until it ends."""
    with configuration_client(hub, token, config_id) as client:
        if not watch:
            config = client.get_configuration(config_id)
            if as_json:
                print_json(view.status_json(config))
            else:
                _print_status(config)
            return
        try:
            if as_json:
                _watch_json(client, config_id, interval)
            else:
                _watch_live(client, config_id, interval)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None


def _watch_json(client: HubClient, config_id: str, interval: float) -> None:
    while True:
        config = client.get_configuration(config_id)
        typer.echo(json.dumps(view.status_json(config)))
        if view.is_finished(config):
            return
        time.sleep(interval)


def _watch_live(client: HubClient, config_id: str, interval: float) -> None:
    from rich.live import Live

    config = client.get_configuration(config_id)
    with Live(_status_view(config), auto_refresh=False) as live:
        while not view.is_finished(config):
            time.sleep(interval)
            config = client.get_configuration(config_id)
            live.update(_status_view(config), refresh=True)


def _rollout_command(action: str, config_id: str, hub: str | None, token: str | None) -> None:
    with configuration_client(hub, token, config_id) as client:
        config = client.rollout_action(config_id, action)
    typer.echo(f"{config_id}: rollout {view.rollout_text(config)}")


@deployment_app.command("pause")
def deployment_pause(
    config_id: str = ID_ARG, hub: str | None = HUB_OPT, token: str | None = TOKEN_OPT
) -> None:
    """Pause a staged rollout (outcomes are still judged, nothing new is activated)."""
    _rollout_command("pause", config_id, hub, token)


@deployment_app.command("resume")
def deployment_resume(
    config_id: str = ID_ARG, hub: str | None = HUB_OPT, token: str | None = TOKEN_OPT
) -> None:
    """Resume a paused rollout."""
    _rollout_command("resume", config_id, hub, token)


@deployment_app.command("abort")
def deployment_abort(
    config_id: str = ID_ARG, hub: str | None = HUB_OPT, token: str | None = TOKEN_OPT
) -> None:
    """Abort a rollout: roll back or halt, as its onAbort says."""
    _rollout_command("abort", config_id, hub, token)


@deployment_app.command("delete")
def deployment_delete(
    config_id: str = ID_ARG,
    etag: str = typer.Option("*", "--etag", help="Only if the configuration has this etag."),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """Delete a configuration (its devices lose what it gave them)."""
    with configuration_client(hub, token, config_id) as client:
        client.delete_configuration(config_id, etag)
    typer.echo(f"deleted {config_id}")


@deployment_app.command("history")
def deployment_history(
    device_id: str = typer.Argument(..., help="Device id."),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Which deployments a device ran when, newest first."""
    with hub_client(hub, token) as client:
        try:
            entries = client.device_deployments(device_id)
        except HubClientError as exc:
            if exc.status == 404:
                fail(f"device '{device_id}' not found")
            raise
    if as_json:
        print_json(entries)
    else:
        rows = [view.history_row(e) for e in entries]
        table(rows, ["started", "configurations", "succeeded", "ended"], f"{device_id} history")
