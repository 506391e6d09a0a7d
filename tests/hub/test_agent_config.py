"""The agent.yaml that ``device agent-config`` writes: what goes in, and that the agent reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cloud_hub.client_cli.agent_config import agent_config_document, render_agent_yaml
from edge_agent.config import AgentConfig

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\nAbCd==\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    ("mqtt", "mqtt_url"),
    [
        ({"host": "hub.example.com", "port": 8883, "tls": True}, None),
        ({"host": "hub.example.com", "port": 18883, "tls": True}, "mqtts://hub.example.com:18883"),
        ({"host": "10.1.2.3", "port": 8883, "tls": True}, "mqtts://10.1.2.3:8883"),
        ({"host": "hub.example.com", "port": 1883, "tls": False}, "mqtt://hub.example.com:1883"),
    ],
)
def test_mqtt_url_only_when_the_broker_is_not_at_hostname_8883(
    mqtt: dict[str, object], mqtt_url: str | None
) -> None:
    doc = agent_config_document("cam-1", "hub.example.com", "a2V5", {**mqtt, "caCertificate": PEM})
    assert doc["provisioning"] == {
        "source": "manual",
        "connection_string": "HostName=hub.example.com;DeviceId=cam-1;SharedAccessKey=a2V5",
    }
    assert doc.get("hub", {}).get("mqtt_url") == mqtt_url
    assert doc.get("hub", {}).get("ca_cert") == (PEM if mqtt["tls"] else None)


def test_rendered_yaml_is_what_the_agent_reads(tmp_path: Path) -> None:
    mqtt = {"host": "127.0.0.9", "port": 40001, "tls": True, "caCertificate": PEM}
    doc = agent_config_document("cam-1", "127.0.0.9", "k/ey+=", mqtt, tmp_path / "agent data")
    text = render_agent_yaml(doc, "cam-1")
    assert text.startswith("# edgefleet agent for device cam-1")
    assert yaml.safe_load(text) == doc
    config = AgentConfig.model_validate(yaml.safe_load(text))
    assert config.hub.ca_cert == PEM
    assert config.hub.mqtt_url == "mqtts://127.0.0.9:40001"
    assert config.data_dir == tmp_path / "agent data"
