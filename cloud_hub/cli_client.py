"""CLI commands that talk to a running hub: device, twin and query (`--hub URL --token T`)."""

from __future__ import annotations

import base64
import json
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from edgefleet.cli_apps import device_app, fail, query_app, twin_app
from edgefleet.hubclient import ENV_HUB, ENV_TOKEN, HubClient, HubClientError

HUB_OPT = typer.Option(None, "--hub", envvar=ENV_HUB, help="Hub base URL.")
TOKEN_OPT = typer.Option(None, "--token", envvar=ENV_TOKEN, help="Hub API token.")
JSON_OPT = typer.Option(False, "--json", help="Print JSON instead of a table.")
MODULE_OPT = typer.Option(None, "--module", "-m", help="A module of the device.")
IMPORT_BATCH = 500


class _DefaultRunGroup(TyperGroup):
    """`edgefleet query "SELECT ..."` means `edgefleet query run "SELECT ..."`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


query_app.info.cls = _DefaultRunGroup


@contextmanager
def _client(hub: str | None, token: str | None) -> Iterator[HubClient]:
    try:
        with HubClient(hub, token) as client:
            yield client
    except HubClientError as exc:
        fail(str(exc))


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=False))


def _table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    Console().print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(doc, dict) or not doc:
        return {prefix: doc}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


def _kv(doc: dict[str, Any], title: str) -> None:
    flat = _flatten(doc)
    _table([{"field": k, "value": v} for k, v in flat.items()], ["field", "value"], title)


def _parse_json_arg(value: str, what: str) -> Any:
    if value.startswith("@"):
        try:
            value = Path(value[1:]).read_text()
        except OSError as exc:
            fail(f"{what}: cannot read {value[1:]}: {exc.strerror}")
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        fail(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")


# -- devices ---------------------------------------------------------------------------------


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
    with _client(hub, token) as client:
        device = client.create_device(device_id, body)
    if as_json:
        _print_json(device)
    else:
        _kv(device, f"device {device_id}")


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
    with _client(hub, token) as client:
        devices = client.list_devices()
    if as_json:
        _print_json(devices)
    else:
        _table([_device_row(d) for d in devices], _DEVICE_COLUMNS, f"{len(devices)} devices")


@device_app.command("show")
def device_show(
    device_id: str,
    module: str | None = MODULE_OPT,
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Show a device (or module) identity."""
    with _client(hub, token) as client:
        doc = client.get_module(device_id, module) if module else client.get_device(device_id)
    if as_json:
        _print_json(doc)
    else:
        _kv(doc, f"{device_id}/{module}" if module else f"device {device_id}")


@device_app.command("delete")
def device_delete(
    device_id: str,
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Delete a device with its modules and twins."""
    with _client(hub, token) as client:
        client.delete_device(device_id)
    if as_json:
        _print_json({"deleted": device_id})
    else:
        typer.echo(f"deleted {device_id}")


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


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
    with _client(hub, token) as client:
        client.apply_configuration_content(device_id, doc)
    if as_json:
        _print_json({"deviceId": device_id, "applied": str(content)})
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
    if which not in ("primary", "secondary", "swap"):
        fail("--which must be primary, secondary or swap")
    with _client(hub, token) as client:
        doc = client.get_module(device_id, module) if module else client.get_device(device_id)
        auth = doc.get("authentication") or {}
        if auth.get("type") != "sas":
            fail(f"{device_id} uses {auth.get('type')} authentication, not symmetric keys")
        keys = dict(auth.get("symmetricKey") or {})
        if which == "swap":
            keys = {"primaryKey": keys.get("secondaryKey"), "secondaryKey": keys.get("primaryKey")}
        else:
            keys[f"{which}Key"] = _new_key()
        body = {**doc, "authentication": {"type": "sas", "symmetricKey": keys}}
        path = f"/devices/{_quote(device_id)}" + (f"/modules/{_quote(module)}" if module else "")
        response = client.request(
            "PUT", path, json=body, headers={"If-Match": f'"{doc.get("etag", "*")}"'}
        )
        updated = response.json()
    if as_json:
        _print_json(updated)
    else:
        typer.echo(f"rotated {which} key of {device_id}" + (f"/{module}" if module else ""))


def _quote(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")


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
    with _client(hub, token) as client:
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
        _print_json({"connectionString": value})
    else:
        typer.echo(value)


@device_app.command("export")
def device_export(
    output: Path | None = typer.Argument(None, help="JSON-lines file (default: stdout)."),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """Export every identity (with keys, tags and desired properties) as JSON lines."""
    with _client(hub, token) as client:
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
        _client(hub, token) as client,
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
        _print_json(summary)
    else:
        typer.echo(f"imported {summary['imported']} of {len(records)} devices")
        for error in errors:
            typer.echo(f"  {error.get('deviceId')}: {error.get('errorStatus')}", err=True)
    if errors:
        raise typer.Exit(1)


# -- twins -----------------------------------------------------------------------------------


@twin_app.command("show")
def twin_show(
    device_id: str,
    module: str | None = MODULE_OPT,
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Show a device or module twin."""
    with _client(hub, token) as client:
        twin = client.get_twin(device_id, module)
    if as_json:
        _print_json(twin)
        return
    view = {
        "version": twin.get("version"),
        "etag": twin.get("etag"),
        "tags": twin.get("tags"),
        "desired": _without_meta(twin.get("properties", {}).get("desired", {})),
        "reported": _without_meta(twin.get("properties", {}).get("reported", {})),
    }
    _kv(view, f"twin {device_id}" + (f"/{module}" if module else ""))


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
    body: Any = _parse_json_arg(patch, "patch") if patch else {}
    if not isinstance(body, dict):
        fail("patch must be a JSON object")
    if tags is not None:
        body["tags"] = _parse_json_arg(tags, "--tags")
    if desired is not None:
        body.setdefault("properties", {})["desired"] = _parse_json_arg(desired, "--desired")
    if not body:
        fail("nothing to patch: give a patch, --tags or --desired")
    with _client(hub, token) as client:
        twin = client.patch_twin(device_id, body, module, etag)
    if as_json:
        _print_json(twin)
    else:
        desired_version = twin.get("properties", {}).get("desired", {}).get("$version")
        typer.echo(
            f"patched {device_id}: version {twin.get('version')}, desired $version "
            f"{desired_version}"
        )


# -- queries ---------------------------------------------------------------------------------


@query_app.command("run")
def query_run(
    query: str = typer.Argument(..., help="SELECT ... FROM devices [WHERE ...]"),
    page_size: int = typer.Option(1000, "--page-size", help="Items per request."),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Run a query on the hub (also: `edgefleet query "SELECT ..."`)."""
    with _client(hub, token) as client:
        rows = client.query(query, page_size)
    if as_json:
        _print_json(rows)
        return
    if rows and all(isinstance(r, dict) and "properties" in r for r in rows):
        view = [
            {
                "deviceId": r.get("deviceId"),
                "moduleId": r.get("moduleId"),
                "status": r.get("status"),
                "connectionState": r.get("connectionState"),
                "tags": r.get("tags"),
                "version": r.get("version"),
            }
            for r in rows
        ]
        columns = ["deviceId", "status", "connectionState", "tags", "version"]
        if any(v["moduleId"] for v in view):
            columns.insert(1, "moduleId")
        _table(view, columns, f"{len(rows)} twins")
        return
    columns = []
    for row in rows:
        for key in row if isinstance(row, dict) else ["value"]:
            if key not in columns:
                columns.append(key)
    dict_rows = [r if isinstance(r, dict) else {"value": r} for r in rows]
    _table(dict_rows, columns, f"{len(rows)} rows")
