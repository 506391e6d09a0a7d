"""``edgefleet device ...``: identities, keys and connection settings on a running hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cloud_hub.client_cli.common import (
    HUB_OPT,
    JSON_OPT,
    MODULE_OPT,
    TOKEN_OPT,
    hub_client,
    print_json,
    show_fields,
    table,
)
from edgefleet.cli_apps import device_app, fail


@device_app.command("create")
def device_create(
    device_id: str = typer.Argument(..., help="Device id."),
    edge: bool = typer.Option(False, "--edge", help="An IoT Edge device (adds system modules)."),
    disabled: bool = typer.Option(False, "--disabled", help="Create it disabled."),
    primary_key: str | None = typer.Option(None, "--primary-key"),
    secondary_key: str | None = typer.Option(None, "--secondary-key"),
    thumbprint: str | None = typer.Option(
        None, "--thumbprint", help="X.509 self-signed certificate thumbprint (instead of keys)."
    ),
    secondary_thumbprint: str | None = typer.Option(None, "--secondary-thumbprint"),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Register a device (symmetric keys are generated unless given)."""
    auth: dict[str, Any]
    if thumbprint:
        auth = {
            "type": "selfSigned",
            "x509Thumbprint": {
                "primaryThumbprint": thumbprint,
                "secondaryThumbprint": secondary_thumbprint,
            },
        }
    else:
        auth = {
            "type": "sas",
            "symmetricKey": {"primaryKey": primary_key, "secondaryKey": secondary_key},
        }
    body = {
        "status": "disabled" if disabled else "enabled",
        "authentication": auth,
        "capabilities": {"iotEdge": edge},
    }
    with hub_client(hub, token) as client:
        device = client.create_device(device_id, body)
    if as_json:
        print_json(device)
    else:
        show_fields(device, f"device {device_id}")


_DEVICE_COLUMNS = ["deviceId", "status", "connectionState", "lastActivityTime", "iotEdge", "auth"]


def _device_row(device: dict[str, Any]) -> dict[str, Any]:
    return {
        **device,
        "iotEdge": (device.get("capabilities") or {}).get("iotEdge"),
        "auth": (device.get("authentication") or {}).get("type"),
    }


@device_app.command("list")
def device_list(
    hub: str | None = HUB_OPT, token: str | None = TOKEN_OPT, as_json: bool = JSON_OPT
) -> None:
    """List all devices."""
    with hub_client(hub, token) as client:
        devices = client.list_devices()
    if as_json:
        print_json(devices)
    else:
        table([_device_row(d) for d in devices], _DEVICE_COLUMNS, f"{len(devices)} devices")


@device_app.command("show")
def device_show(
    device_id: str,
    module: str | None = MODULE_OPT,
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Show a device (or module) identity."""
    with hub_client(hub, token) as client:
        doc = client.get_module(device_id, module) if module else client.get_device(device_id)
    if as_json:
        print_json(doc)
    else:
        show_fields(doc, f"{device_id}/{module}" if module else f"device {device_id}")


@device_app.command("delete")
def device_delete(
    device_id: str,
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Delete a device with its modules and twins."""
    with hub_client(hub, token) as client:
        client.delete_device(device_id)
    if as_json:
        print_json({"deleted": device_id})
    else:
        typer.echo(f"deleted {device_id}")


@device_app.command("set-modules")
def device_set_modules(
    device_id: str,
    content: Path = typer.Option(
        ..., "--content", "-k", help="Deployment manifest (JSON or YAML) with modulesContent."
    ),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Set an IoT Edge device's modules from a deployment manifest (applyConfigurationContent)."""
    import yaml

    try:
        doc = yaml.safe_load(content.read_text())
    except (OSError, yaml.YAMLError) as exc:
        fail(f"cannot read {content}: {exc}")
    if not isinstance(doc, dict):
        fail(f"{content}: a deployment manifest must be a JSON/YAML object")
    with hub_client(hub, token) as client:
        client.apply_configuration_content(device_id, doc)
    if as_json:
        print_json({"deviceId": device_id, "applied": str(content)})
    else:
        typer.echo(f"deployment {content} applied to {device_id}")


@device_app.command("rotate-key")
def device_rotate_key(
    device_id: str,
    which: str = typer.Option("primary", "--which", help="primary, secondary or swap."),
    module: str | None = MODULE_OPT,
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Replace the primary or secondary symmetric key (or swap them)."""
    with hub_client(hub, token) as client:
        updated = client.rotate_key(device_id, which, module)
    if as_json:
        print_json(updated)
    else:
        typer.echo(f"rotated {which} key of {device_id}" + (f"/{module}" if module else ""))


@device_app.command("connection-string")
def device_connection_string(
    device_id: str,
    module: str | None = MODULE_OPT,
    secondary: bool = typer.Option(False, "--secondary", help="Use the secondary key."),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Print the IoT Hub-style connection string a device (or module) is configured with."""
    with hub_client(hub, token) as client:
        host = client.health().get("hostName") or client.base_url.split("://", 1)[-1]
        doc = client.get_module(device_id, module) if module else client.get_device(device_id)
    keys = (doc.get("authentication") or {}).get("symmetricKey") or {}
    key = keys.get("secondaryKey" if secondary else "primaryKey")
    parts = [f"HostName={host}", f"DeviceId={device_id}"]
    if module:
        parts.append(f"ModuleId={module}")
    if key:
        parts.append(f"SharedAccessKey={key}")
    else:
        parts.append("x509=true")
    value = ";".join(parts)
    if as_json:
        print_json({"connectionString": value})
    else:
        typer.echo(value)
