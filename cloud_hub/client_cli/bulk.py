"""``edgefleet device export|import``: every identity with its tags and desired properties
as JSON lines, and back in batches through the bulk registry API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from cloud_hub.client_cli.common import (
    HUB_OPT,
    JSON_OPT,
    TOKEN_OPT,
    hub_client,
    print_json,
)
from edgefleet.cli_apps import device_app, fail
from edgefleet.hubclient import HubClientError

IMPORT_BATCH = 500


@device_app.command("export")
def device_export(
    output: Path | None = typer.Argument(None, help="JSON-lines file (default: stdout)."),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """Export every identity (with keys, tags and desired properties) as JSON lines."""
    with hub_client(hub, token) as client:
        lines = []
        for device in client.list_devices():
            twin = client.get_twin(device["deviceId"])
            desired = {
                k: v
                for k, v in twin.get("properties", {}).get("desired", {}).items()
                if not k.startswith("$")
            }
            lines.append(
                json.dumps(
                    {
                        "deviceId": device["deviceId"],
                        "status": device.get("status"),
                        "statusReason": device.get("statusReason"),
                        "authentication": device.get("authentication"),
                        "capabilities": device.get("capabilities"),
                        "tags": twin.get("tags") or {},
                        "properties": {"desired": desired},
                    }
                )
            )
    text = "".join(line + "\n" for line in lines)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        typer.echo(f"exported {len(lines)} devices to {output}", err=True)


@device_app.command("import")
def device_import(
    source: Path = typer.Argument(..., help="JSON-lines file from `device export` ('-': stdin)."),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Create (or update) the identities and twins of a JSON-lines file."""
    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_text()
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror}")
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            fail(f"{source}:{number}: not JSON: {exc.msg}")
        if not isinstance(record, dict) or not isinstance(record.get("deviceId"), str):
            fail(f"{source}:{number}: each line needs a string deviceId")
        records.append(record)
    from rich.console import Console
    from rich.progress import Progress

    errors: list[dict[str, Any]] = []
    with (
        hub_client(hub, token) as client,
        Progress(console=Console(stderr=True), transient=True) as progress,
    ):
        task = progress.add_task("importing", total=len(records))
        for first in range(0, len(records), IMPORT_BATCH):
            items = [
                {**record, "id": record["deviceId"], "importMode": "createOrUpdate"}
                for record in records[first : first + IMPORT_BATCH]
            ]
            try:
                result = client.bulk_devices(items)
            except HubClientError as exc:
                fail(str(exc))
            errors.extend(result.get("errors", []))
            progress.advance(task, len(items))
    summary = {"imported": len(records) - len(errors), "errors": errors}
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"imported {summary['imported']} of {len(records)} devices")
        for error in errors:
            typer.echo(f"  {error.get('deviceId')}: {error.get('errorStatus')}", err=True)
    if errors:
        raise typer.Exit(1)
