"""``edgefleet twin show|patch``."""

from __future__ import annotations

from typing import Any

import typer

from cloud_hub.client_cli.common import (
    HUB_OPT,
    JSON_OPT,
    MODULE_OPT,
    TOKEN_OPT,
    hub_client,
    parse_json_arg,
    print_json,
    show_fields,
)
from edgefleet.cli_apps import fail, twin_app


@twin_app.command("show")
def twin_show(
    device_id: str,
    module: str | None = MODULE_OPT,
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Show a device or module twin."""
    with hub_client(hub, token) as client:
        twin = client.get_twin(device_id, module)
    if as_json:
        print_json(twin)
        return
    view = {
        "version": twin.get("version"),
        "etag": twin.get("etag"),
        "tags": twin.get("tags"),
        "desired": _without_meta(twin.get("properties", {}).get("desired", {})),
        "reported": _without_meta(twin.get("properties", {}).get("reported", {})),
    }
    show_fields(view, f"twin {device_id}" + (f"/{module}" if module else ""))


def _without_meta(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "$metadata"}


@twin_app.command("patch")
def twin_patch(
    device_id: str,
    patch: str | None = typer.Argument(
        None, help='Twin patch JSON ({"tags": ..., "properties": {"desired": ...}}) or @file.'
    ),
    tags: str | None = typer.Option(None, "--tags", help="Tags merge patch (JSON or @file)."),
    desired: str | None = typer.Option(
        None, "--desired", help="Desired properties merge patch (JSON or @file)."
    ),
    etag: str | None = typer.Option(None, "--etag", help="Only apply if the twin has this etag."),
    module: str | None = MODULE_OPT,
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Merge-patch tags and desired properties (null deletes a key)."""
    body: Any = parse_json_arg(patch, "patch") if patch else {}
    if not isinstance(body, dict):
        fail("patch must be a JSON object")
    if tags is not None:
        body["tags"] = parse_json_arg(tags, "--tags")
    if desired is not None:
        body.setdefault("properties", {})["desired"] = parse_json_arg(desired, "--desired")
    if not body:
        fail("nothing to patch: give a patch, --tags or --desired")
    with hub_client(hub, token) as client:
        twin = client.patch_twin(device_id, body, module, etag)
    if as_json:
        print_json(twin)
    else:
        desired_version = twin.get("properties", {}).get("desired", {}).get("$version")
        typer.echo(
            f"patched {device_id}: version {twin.get('version')}, desired $version "
            f"{desired_version}"
        )
