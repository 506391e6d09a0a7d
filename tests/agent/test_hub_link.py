"""Where the agent connects, and what it says when the hub stays out of reach."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig, ConfigError
from edge_agent.hub_twin_channel import HubEndpoint, mqtt_endpoint, unreachable_warning
from tests.foundation.test_readme_flow import own_loopback_address
from tests.support.agent import AgentProcess

CONN = "HostName=hub.example.test;DeviceId=d1;SharedAccessKey=a2V5"


def config(**hub: object) -> AgentConfig:
    return AgentConfig.model_validate(
        {"provisioning": {"source": "manual", "connection_string": CONN}, "hub": hub}
    )


def test_the_default_endpoint_is_hostname_8883_with_tls() -> None:
    ep = mqtt_endpoint(config(), "hub.example.test", "HostName of provisioning.connection_string")
    assert (ep.host, ep.port, ep.tls) == ("hub.example.test", 8883, True)
    assert ep.describe() == "mqtts://hub.example.test:8883"
    assert ep.setting.startswith("HostName of provisioning.connection_string")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtts://10.0.0.1:18883", ("10.0.0.1", 18883, True)),
        ("mqtt://broker", ("broker", 1883, False)),
        ("mqtts://broker", ("broker", 8883, True)),
    ],
)
def test_mqtt_url_overrides_the_hostname(url: str, expected: tuple[str, int, bool]) -> None:
    ep = mqtt_endpoint(config(mqtt_url=url), "ignored", "HostName")
    assert (ep.host, ep.port, ep.tls) == expected
    assert ep.setting == "hub.mqtt_url"


def test_a_bad_mqtt_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="hub.mqtt_url must be"):
        mqtt_endpoint(config(mqtt_url="http://hub:80"), "ignored", "HostName")


def test_one_ca_only_and_it_must_be_pem() -> None:
    with pytest.raises(ValueError, match="ca_file or ca_cert"):
        config(ca_file="/tmp/ca.pem", ca_cert="-----BEGIN CERTIFICATE-----\nx\n")
    with pytest.raises(ValueError, match="PEM certificate"):
        config(ca_cert="not a certificate")


EP = HubEndpoint("hub", 8883, True, "HostName of provisioning.connection_string")


@pytest.mark.parametrize(
    ("down_for", "warned_ago", "warns"),
    [
        (59.0, None, False),  # not long enough yet
        (60.0, None, True),  # the first warning
        (300.0, 100.0, False),  # warned recently
        (700.0, 600.0, True),  # again after ten periods
    ],
)
def test_unreachable_warning_timing(down_for: float, warned_ago: float | None, warns: bool) -> None:
    now = 10_000.0
    last = None if warned_ago is None else now - warned_ago
    message = unreachable_warning(EP, now - down_for, now, last, every=60.0)
    assert (message is not None) == warns
    if message:
        assert f"for {down_for:.0f} s at mqtts://hub:8883" in message
        assert "HostName of provisioning.connection_string" in message


def test_agent_names_the_address_and_setting_when_the_hub_is_unreachable(tmp_path: Path) -> None:
    address = own_loopback_address()  # nothing listens on its 8883
    agent = AgentProcess(
        tmp_path,
        "lonely",
        "process",
        provisioning={
            "source": "manual",
            "connection_string": f"HostName={address};DeviceId=lonely;SharedAccessKey=a2V5",
        },
        hub={"unreachable_warning_secs": 1},
    )
    agent.start()
    try:
        deadline = time.monotonic() + 60
        wanted = f"at mqtts://{address}:8883 (from HostName of provisioning.connection_string"
        while time.monotonic() < deadline and wanted not in agent.log_path.read_text():
            time.sleep(0.2)
        log = agent.log_path.read_text()
        assert wanted in log
        assert "WARNING" in next(line for line in log.splitlines() if wanted in line)
    finally:
        assert agent.stop() == 0
