"""``edgefleet device agent-config ID``: a complete agent.yaml for an IoT Edge device.

The file carries an IoT Hub connection string (bare ``HostName``, where devices connect on 8883),
the hub's CA certificate inline, and ``hub.mqtt_url`` only when the hub's broker is elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cloud_hub.broker.preflight import DEFAULT_MQTT_PORT
from cloud_hub.client_cli.common import HUB_OPT, TOKEN_OPT, hub_client, quote_segment
from edgefleet.cli_apps import device_app, fail
from edgefleet.hubclient import HubClient


def agent_config_document(
    device_id: str, host_name: str, key: str, mqtt: dict[str, Any], data_dir: Path | None = None
) -> dict[str, Any]:
    """The agent configuration (as ``edge_agent.config.AgentConfig`` reads it) from the hub's
    ``hostName``, the device key and the device's ``mqttCredentials``."""
    connection = f"HostName={host_name};DeviceId={device_id};SharedAccessKey={key}"
    doc: dict[str, Any] = {"provisioning": {"source": "manual", "connection_string": connection}}
    if data_dir is not None:
        doc["data_dir"] = str(data_dir)
    hub: dict[str, Any] = {}
    host, port, tls = mqtt.get("host"), mqtt.get("port"), bool(mqtt.get("tls"))
    if (host, port, tls) != (host_name, DEFAULT_MQTT_PORT, True):
        hub["mqtt_url"] = f"{'mqtts' if tls else 'mqtt'}://{host}:{port}"
    if tls and mqtt.get("caCertificate"):
        hub["ca_cert"] = mqtt["caCertificate"]
    if hub:
        doc["hub"] = hub
    return doc


def fetch_agent_config(
    client: HubClient, device_id: str, data_dir: Path | None = None
) -> dict[str, Any]:
    """What ``agent_config_document`` needs, read from the hub; ValueError for a device the
    agent cannot run as."""
    host_name = client.health().get("hostName") or ""
    device = client.get_device(device_id)
    if not (device.get("capabilities") or {}).get("iotEdge"):
        raise ValueError(f"{device_id} is not an IoT Edge device (create it with --edge)")
    key = ((device.get("authentication") or {}).get("symmetricKey") or {}).get("primaryKey")
    if not key:
        raise ValueError(f"{device_id} has no symmetric key: write provisioning for X.509 by hand")
    mqtt = client.request("GET", f"/devices/{quote_segment(device_id)}/mqttCredentials").json()
    return agent_config_document(device_id, host_name, key, mqtt, data_dir)


def render_agent_yaml(doc: dict[str, Any], device_id: str) -> str:
    """YAML with a comment header; scalars JSON-quoted (valid YAML), the CA as a literal block."""
    lines = [
        f"# edgefleet agent for device {device_id} (edgefleet device agent-config {device_id}).",
        "# Run it with: edgefleet agent run --config agent.yaml",
        "provisioning:",
    ]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in doc["provisioning"].items()]
    if "data_dir" in doc:
        lines.append(f"data_dir: {json.dumps(doc['data_dir'])}")
    hub = doc.get("hub") or {}
    if hub:
        lines.append("hub:")
        if "mqtt_url" in hub:
            lines.append(f"  mqtt_url: {json.dumps(hub['mqtt_url'])}")
        if "ca_cert" in hub:
            lines.append("  ca_cert: |")
            lines += [f"    {line}" for line in hub["ca_cert"].strip().splitlines()]
    return "\n".join(lines) + "\n"


@device_app.command("agent-config")
def device_agent_config(
    device_id: str,
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="The agent's data directory (default: the agent's own default)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the file here (owner-only) instead of stdout."
    ),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """Print a complete agent.yaml for an IoT Edge device: connection string, the hub's CA and
    its MQTT endpoint when devices cannot reach it at HostName:8883."""
    from edgefleet.files import atomic_write_text

    with hub_client(hub, token) as client:
        try:
            doc = fetch_agent_config(client, device_id, data_dir)
        except ValueError as exc:
            fail(str(exc))
    text = render_agent_yaml(doc, device_id)
    if output is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(output, text)
        typer.echo(f"wrote {output}", err=True)
