"""Per-device security on the hub-managed mosquitto: ACLs, identities, keys, certificates."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.device_client import DeviceClient
from edgefleet import protocol as p
from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import (
    create_device,
    credentials,
    device_client,
    recorder,
    stop_managed_mosquitto,
    wait_until,
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("hub-security")
    try:
        with running_hub(tmp, broker="mosquitto") as running:
            yield running
    finally:
        stop_managed_mosquitto(tmp / "hub")


NOT_AUTHORIZED = 135  # paho reports MQTT 3.1.1's CONNACK 5 as reason code 0x87


def _stored_ids(hub: RunningHub, device_id: str) -> set[str]:
    with hub.client() as api:
        body = api.request("GET", f"/devices/{device_id}/messages", params={"limit": 1000}).json()
    return {m["messageId"] for m in body["messages"]}


def _raw_connect(creds: dict[str, Any], username: str, password: str, client_id: str) -> int:
    """CONNACK reason of a bare connection attempt: 0 accepted, 135 not authorised."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.username_pw_set(username, password)
    client.tls_set(ca_certs=creds["ca_file"])
    codes: list[int] = []
    client.on_connect = lambda c, u, f, rc, pr: codes.append(int(rc.value))
    try:
        client.connect(creds["host"], creds["port"])
    except OSError:
        return -1
    client.loop_start()
    wait_until(lambda: bool(codes), 10)
    client.disconnect()
    client.loop_stop()
    return codes[0] if codes else -1


def test_a_device_cannot_read_or_write_another_devices_topics(
    hub: RunningHub, tmp_path: Path
) -> None:
    create_device(hub, "victim")
    create_device(hub, "intruder")
    victim = device_client(hub, "victim", tmp_path)
    victim.connect(20)
    creds = credentials(hub, "intruder")
    spy = recorder(
        creds["port"],
        ["devices/victim/#", "devices/+/messages/events/#", "#", "devices/#"],
        username=creds["username"],
        password=creds["password"],
        client_id="intruder",
        tls_ca=creds["ca_file"],
    )
    try:
        assert spy.subscribed.wait(10)
        # writes into the victim's space: telemetry, reported properties, a method answer
        spy.client.publish(p.telemetry_topic("victim", {p.SYS_MESSAGE_ID: "forged"}), b"x", qos=1)
        spy.client.publish(p.twin_reported_topic("victim", "r1"), b'{"pwned": true}', qos=1)
        spy.client.publish(p.presence_topic("victim"), p.presence_payload(p.OFFLINE), qos=1)
        # the victim's real traffic, and the hub's pushes to it
        sent = victim.send_message(b"secret")
        assert victim.wait_for_outbox_empty(20)
        with hub.client() as api:
            api.patch_twin("victim", {"properties": {"desired": {"secret": 1}}})
        assert victim.get_twin()["desired"]["secret"] == 1
        assert wait_until(lambda: sent in _stored_ids(hub, "victim"))
        time.sleep(0.5)
        assert "forged" not in _stored_ids(hub, "victim")
        assert "pwned" not in victim.get_twin()["reported"]
        with hub.client() as api:
            assert api.get_device("victim")["connectionState"] == "Connected"
        assert [t for t in spy.topics() if not t.startswith("devices/intruder/")] == []
    finally:
        spy.client.loop_stop()
        victim.shutdown()


def test_a_spoofed_client_id_neither_takes_over_nor_reads(hub: RunningHub, tmp_path: Path) -> None:
    create_device(hub, "owner")
    create_device(hub, "spoofer")
    owner = device_client(hub, "owner", tmp_path)
    owner.connect(20)
    creds = credentials(hub, "spoofer")
    spoof = recorder(
        creds["port"],
        ["devices/owner/#"],
        username=creds["username"],
        password=creds["password"],
        client_id="owner",  # the other device's client id
        tls_ca=creds["ca_file"],
    )
    try:
        assert spoof.subscribed.wait(10)
        time.sleep(0.5)
        assert owner.connected
        assert owner.patch_twin_reported_properties({"still": "here"}) >= 2
        owner.send_message(b"private")
        assert owner.wait_for_outbox_empty(20)
        time.sleep(0.5)
        assert spoof.topics() == []
    finally:
        spoof.client.loop_stop()
        owner.shutdown()


def test_disabled_device_is_disconnected_and_refused(hub: RunningHub, tmp_path: Path) -> None:
    create_device(hub, "to-disable")
    client = device_client(hub, "to-disable", tmp_path)
    client.connect(20)
    creds = credentials(hub, "to-disable")
    with hub.client() as api:
        api.update_device("to-disable", {"deviceId": "to-disable", "status": "disabled"})
    try:
        assert wait_until(lambda: not client.connected, 10)
        time.sleep(1.0)
        assert not client.connected  # its reconnect attempts are refused
        code = _raw_connect(creds, creds["username"], creds["password"], "to-disable")
        assert code == NOT_AUTHORIZED
        with hub.client() as api:
            api.update_device("to-disable", {"deviceId": "to-disable", "status": "enabled"})
        assert wait_until(lambda: client.connected, 20)
    finally:
        client.shutdown()


def test_key_rotation_keeps_the_other_key_working(hub: RunningHub, tmp_path: Path) -> None:
    device = create_device(hub, "rotating")
    keys = device["authentication"]["symmetricKey"]
    old_primary, secondary = keys["primaryKey"], keys["secondaryKey"]
    on_secondary: DeviceClient = device_client(hub, "rotating", tmp_path, key=secondary)
    on_secondary.connect(20)
    creds = credentials(hub, "rotating")
    new_primary = base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        with hub.client() as api:
            api.update_device(
                "rotating",
                {
                    "deviceId": "rotating",
                    "authentication": {
                        "type": "sas",
                        "symmetricKey": {"primaryKey": new_primary, "secondaryKey": secondary},
                    },
                },
            )

        def old_refused() -> bool:
            pw = p.mqtt_password("rotating", old_primary)
            return _raw_connect(creds, "rotating", pw, "rotating-check") == NOT_AUTHORIZED

        assert wait_until(old_refused, 10, 0.3)
        new_pw = p.mqtt_password("rotating", new_primary)
        assert _raw_connect(creds, "rotating", new_pw, "rotating-check") == 0
        # the device on the secondary key never noticed
        assert on_secondary.connected
        assert on_secondary.patch_twin_reported_properties({"rotated": True}) >= 2
    finally:
        on_secondary.shutdown()


def test_revoked_certificate_is_disconnected_and_refused(hub: RunningHub, tmp_path: Path) -> None:
    create_device(hub, "x509-dev")
    creds = credentials(hub, "x509-dev")
    with hub.client() as api:
        issued = api.request("POST", "/devices/x509-dev/certificate").json()
    cert, key = tmp_path / "dev.pem", tmp_path / "dev.key"
    cert.write_text(issued["certificate"])
    key.write_text(issued["privateKey"])
    client = DeviceClient.create_from_x509_certificate(
        cert,
        key,
        f"{creds['host']}:{creds['cert_port']}",
        "x509-dev",
        ca_file=creds["ca_file"],
        outbox_path=tmp_path / "o.db",
        backoff_base=0.1,
        backoff_max=1.0,
    )
    client.connect(20)
    try:
        sent = client.send_message(b"signed")
        assert client.wait_for_outbox_empty(20)
        assert wait_until(lambda: sent in _stored_ids(hub, "x509-dev"))
        with hub.client() as api:
            api.request("DELETE", "/devices/x509-dev/certificate")
        assert wait_until(lambda: not client.connected, 10)
        time.sleep(1.5)
        assert not client.connected
        late = client.send_message(b"after revocation")
        time.sleep(1.0)
        assert late not in _stored_ids(hub, "x509-dev")
    finally:
        client.shutdown()


def test_disabled_x509_device_is_held_then_released(hub: RunningHub, tmp_path: Path) -> None:
    create_device(hub, "x509-hold")
    creds = credentials(hub, "x509-hold")
    with hub.client() as api:
        issued = api.request("POST", "/devices/x509-hold/certificate").json()
    cert, key = tmp_path / "hold.pem", tmp_path / "hold.key"
    cert.write_text(issued["certificate"])
    key.write_text(issued["privateKey"])
    client = DeviceClient.create_from_x509_certificate(
        cert,
        key,
        f"{creds['host']}:{creds['cert_port']}",
        "x509-hold",
        client_id="not-my-id",  # the broker replaces it with the certificate's CN
        ca_file=creds["ca_file"],
        outbox_path=tmp_path / "o.db",
        backoff_base=0.1,
        backoff_max=1.0,
    )
    client.connect(20)
    try:
        with hub.client() as api:
            api.update_device("x509-hold", {"deviceId": "x509-hold", "status": "disabled"})
        assert wait_until(lambda: not client.connected, 10)
        time.sleep(1.5)
        assert not client.connected
        with hub.client() as api:
            api.update_device("x509-hold", {"deviceId": "x509-hold", "status": "enabled"})
        assert wait_until(lambda: client.connected, 20)
        assert client.patch_twin_reported_properties({"back": True}) >= 2
    finally:
        client.shutdown()
