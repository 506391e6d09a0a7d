"""CLI: `device mqtt-credentials`, `device cert`, `device simulate` and `bench ingest`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from edgefleet.cli_apps import device_app, fail

HUB_OPT = typer.Option(None, "--hub", envvar="EDGEFLEET_HUB", help="Hub base URL.")
TOKEN_OPT = typer.Option(None, "--token", envvar="EDGEFLEET_TOKEN", help="Hub API token.")
JSON_OPT = typer.Option(False, "--json", help="Print JSON.")


def _call(hub: str | None, token: str | None, method: str, path: str) -> Any:
    from edgefleet.hubclient import HubClient, HubClientError

    try:
        with HubClient(hub, token) as client:
            return client.request(method, path).json()
    except HubClientError as exc:
        fail(str(exc))


@device_app.command("mqtt-credentials")
def mqtt_credentials(
    device_id: str = typer.Argument(..., help="Device id."),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """MQTT host, port, TLS CA, client id, user name and password of a device (primary key), and
    the port of the X.509 listener."""
    creds = _call(hub, token, "GET", f"/devices/{device_id}/mqttCredentials")
    keys = ("host", "port", "tls", "ca_file", "client_id", "username", "password", "cert_port")
    out = {k: creds.get(k) for k in keys}
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for key in keys:
        typer.echo(f"{key}: {out[key]}")


@device_app.command("cert")
def device_cert(
    device_id: str = typer.Argument(..., help="Device id."),
    out_dir: Path = typer.Option(Path("."), "--out", help="Directory for <id>.pem/.key/ca.pem."),
    revoke: bool = typer.Option(False, "--revoke", help="Revoke the last issued certificate."),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Issue an X.509 device certificate signed by the hub CA (or revoke it via the CRL)."""
    if revoke:
        result = _call(hub, token, "DELETE", f"/devices/{device_id}/certificate")
        if as_json:
            typer.echo(json.dumps(result, indent=2))
        else:
            typer.echo(f"revoked serial {result['revokedSerialNumber']} of {device_id}")
        return
    issued = _call(hub, token, "POST", f"/devices/{device_id}/certificate")
    creds = _call(hub, token, "GET", f"/devices/{device_id}/mqttCredentials")
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in device_id)
    cert_file, key_file, ca_file = (
        out_dir / f"{safe}.pem",
        out_dir / f"{safe}.key",
        out_dir / "ca.pem",
    )
    cert_file.write_text(issued["certificate"])
    key_file.touch(mode=0o600)
    key_file.write_text(issued["privateKey"])
    ca_file.write_text(issued["caCertificate"])
    result = {
        "deviceId": device_id,
        "certFile": str(cert_file),
        "keyFile": str(key_file),
        "caFile": str(ca_file),
        "thumbprint": issued["thumbprint"],
        "serialNumber": issued["serialNumber"],
        # DeviceClient.create_from_x509_certificate(certFile, keyFile, hostname, deviceId, ...)
        "hostname": f"{creds['host']}:{creds['cert_port']}" if creds.get("cert_port") else None,
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            typer.echo(f"{key}: {value}")


@device_app.command("simulate")
def device_simulate(
    count: int = typer.Option(10, "--count", min=1, help="Number of simulated devices."),
    rate: float = typer.Option(1.0, "--rate", min=0.0, help="Messages/s per device."),
    duration: float = typer.Option(10.0, "--duration", min=0.1, help="Seconds to run."),
    prefix: str = typer.Option("sim-", "--prefix", help="Device id prefix."),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Run N simulated devices sending telemetry and answering direct methods."""
    from rich.progress import Progress

    from edge_agent.simulate import ensure_devices, simulate
    from edgefleet.hubclient import HubClient, HubClientError
    from edgefleet.sdk.device_client import ClientError

    try:
        with HubClient(hub, token) as client:
            devices = ensure_devices(client, prefix, count)
    except HubClientError as exc:
        fail(str(exc))
    try:
        with Progress(transient=True, disable=as_json or not sys.stderr.isatty()) as bar:
            task = bar.add_task("simulating", total=duration)

            def progress(elapsed: float, sent: int) -> None:
                bar.update(task, completed=elapsed, description=f"sent {sent}")

            result = simulate(devices, rate, duration, progress=progress)
    except ClientError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            typer.echo(f"{key}: {value}")
