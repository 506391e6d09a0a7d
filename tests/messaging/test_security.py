"""Per-device security, once with mosquitto and once with the embedded broker: ACLs, identities,
keys, X.509 certificates."""

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

from edgefleet import protocol as p
from edgefleet.ca import HubCA
from edgefleet.sdk.device_client import DeviceClient
from tests.support.device_sdk import RawIotHubClient, device_token
from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import (
    create_device,
    credentials,
    device_client,
    recorder,
    stop_managed_mosquitto,
    wait_until,
)


@pytest.fixture(scope="module", params=["mosquitto", "embedded"])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp(f"hub-security-{request.param}")
    try:
        with running_hub(tmp, broker=request.param) as running:
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
    wait_until(lambda: bool(codes), 30)
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
        assert spy.subscribed.wait(30)
        # writes into the victim's space: telemetry, reported properties, a method answer
        spy.client.publish(p.telemetry_topic("victim", {p.SYS_MESSAGE_ID: "forged"}), b"x", qos=1)
        spy.client.publish(p.twin_reported_topic("victim", "r1"), b'{"pwned": true}', qos=1)
        spy.client.publish(p.presence_topic("victim"), p.presence_payload(p.OFFLINE), qos=1)
        # a message of its own after them: once the hub stored it, it had the forged ones too
        spy.client.publish(p.telemetry_topic("intruder", {p.SYS_MESSAGE_ID: "own"}), b"y", qos=1)
        # the victim's real traffic, and the hub's pushes to it
        sent = victim.send_message(b"secret")
        assert victim.wait_for_outbox_empty(20)
        with hub.client() as api:
            api.patch_twin("victim", {"properties": {"desired": {"secret": 1}}})
        assert victim.get_twin()["desired"]["secret"] == 1
        assert wait_until(lambda: sent in _stored_ids(hub, "victim"))
        assert wait_until(lambda: "own" in _stored_ids(hub, "intruder"))
        assert "forged" not in _stored_ids(hub, "victim")
        assert "pwned" not in victim.get_twin()["reported"]
        with hub.client() as api:
            assert api.get_device("victim")["connectionState"] == "Connected"
        assert [t for t in spy.topics() if not t.startswith("devices/intruder/")] == []
    finally:
        spy.client.loop_stop()
        victim.shutdown()


def test_iothub_dialect_is_served_with_either_broker(hub: RunningHub) -> None:
    """IoT Hub's user name form with a valid device SAS token: admitted by the embedded broker
    and, with mosquitto, by the hub's front end on the same port; its twin request is answered
    on the dialect's own response topic."""
    device = create_device(hub, "iothub-form")
    creds = credentials(hub, "iothub-form")
    key = device["authentication"]["symmetricKey"]["primaryKey"]
    token = device_token(creds["host"], "iothub-form", key, int(time.time()) + 600)
    raw = RawIotHubClient(creds["host"], hub.ca_file, "iothub-form", token, creds["port"])
    try:
        assert raw.connect() == 0
        assert raw.subscribe("$iothub/twin/res/#") == [1]
        raw.client.publish("$iothub/twin/GET/?$rid=1", b"", qos=1)
        assert wait_until(lambda: len(raw.messages) == 1)
        assert raw.messages[0][0] == "$iothub/twin/res/200/?$rid=1"
    finally:
        raw.close()


def test_a_spoofed_client_id_neither_takes_over_nor_reads(hub: RunningHub, tmp_path: Path) -> None:
    create_device(hub, "owner")
    create_device(hub, "spoofer")
    owner = device_client(hub, "owner", tmp_path)
    owner.connect(20)
    creds = credentials(hub, "spoofer")
    spoof = recorder(
        creds["port"],
        ["devices/owner/#", "devices/spoofer/#"],
        username=creds["username"],
        password=creds["password"],
        client_id="owner",  # the other device's client id
        tls_ca=creds["ca_file"],
    )
    try:
        assert spoof.subscribed.wait(30)
        # a takeover at connect would have cut the owner off from the hub's answers
        assert owner.connected
        assert owner.patch_twin_reported_properties({"still": "here"}) >= 2
        owner.send_message(b"private")
        assert owner.wait_for_outbox_empty(20)
        with hub.client() as api:
            api.patch_twin("owner", {"properties": {"desired": {"for": "owner"}}})
            assert wait_until(lambda: owner.get_twin()["desired"].get("for") == "owner")
            api.request("POST", "/devices/spoofer/messages/devicebound", json={"payload": 1})
        # the spoofer's own message comes after everything the owner got
        assert wait_until(lambda: bool(spoof.topics()))
        assert all(t.startswith("devices/spoofer/") for t in spoof.topics())
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
        assert wait_until(lambda: not client.connected, 30)
        code = _raw_connect(creds, creds["username"], creds["password"], "to-disable")
        assert code == NOT_AUTHORIZED
        assert not client.connected  # its reconnect attempts are refused as well
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

        assert wait_until(old_refused, 60, 0.3)
        new_pw = p.mqtt_password("rotating", new_primary)
        assert _raw_connect(creds, "rotating", new_pw, "rotating-check") == 0
        # the device on the secondary key never noticed
        assert on_secondary.connected
        assert on_secondary.patch_twin_reported_properties({"rotated": True}) >= 2
    finally:
        on_secondary.shutdown()


# -- X.509 device certificates (the cert_port listener) ------------------------------------------


def _issue(hub: RunningHub, device_id: str, tmp: Path) -> tuple[Path, Path]:
    """`edgefleet device cert ID` through the REST API: a certificate and key signed by the CA."""
    tmp.mkdir(parents=True, exist_ok=True)
    with hub.client() as api:
        issued = api.request("POST", f"/devices/{device_id}/certificate").json()
    cert, key = tmp / f"{device_id}.pem", tmp / f"{device_id}.key"
    cert.write_text(issued["certificate"])
    key.write_text(issued["privateKey"])
    return cert, key


def _x509_client(
    hub: RunningHub, device_id: str, cert: tuple[Path, Path], tmp: Path, **kwargs: Any
) -> DeviceClient:
    creds = credentials(hub, device_id)
    assert creds["cert_port"]
    return DeviceClient.create_from_x509_certificate(
        cert[0],
        cert[1],
        f"{creds['host']}:{creds['cert_port']}",
        device_id,
        ca_file=creds["ca_file"],
        outbox_path=tmp / f"outbox-{device_id}.db",
        backoff_base=0.1,
        backoff_max=1.0,
        **kwargs,
    )


def _cert_connect(creds: dict[str, Any], cert: tuple[Path, Path], client_id: str) -> int:
    """CONNACK reason of a bare certificate connection: 0 accepted; a refusal in the TLS
    handshake (mosquitto's CRL, a foreign CA) or without a CONNACK gives -1."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.tls_set(ca_certs=creds["ca_file"], certfile=str(cert[0]), keyfile=str(cert[1]))
    codes: list[int] = []
    gone: list[bool] = []
    client.on_connect = lambda c, u, f, rc, pr: codes.append(int(rc.value))
    client.on_disconnect = lambda c, u, f, rc, pr: gone.append(True)
    try:
        client.connect(creds["host"], creds["cert_port"])
    except (OSError, ValueError):
        return -1
    client.loop_start()
    wait_until(lambda: bool(codes or gone), 30)
    client.disconnect()
    client.loop_stop()
    return codes[0] if codes else -1


def test_a_certificate_device_connects_and_its_traffic_is_stored(
    hub: RunningHub, tmp_path: Path
) -> None:
    create_device(hub, "x509-ok")
    cert = _issue(hub, "x509-ok", tmp_path)
    client = _x509_client(hub, "x509-ok", cert, tmp_path)
    client.connect(20)
    try:
        sent = client.send_message(b"signed")
        assert client.wait_for_outbox_empty(20)
        assert wait_until(lambda: sent in _stored_ids(hub, "x509-ok"))
        assert client.patch_twin_reported_properties({"via": "x509"}) >= 2
        with hub.client() as api:
            assert wait_until(
                lambda: api.get_device("x509-ok")["connectionState"] == "Connected", 30
            )
    finally:
        client.shutdown()


def test_a_certificate_from_another_ca_is_refused(hub: RunningHub, tmp_path: Path) -> None:
    create_device(hub, "x509-foreign")
    creds = credentials(hub, "x509-foreign")
    other = HubCA(tmp_path / "other-ca").ensure()
    issued = other.issue_device_cert("x509-foreign")
    assert _cert_connect(creds, (issued.cert_file, issued.key_file), "x509-foreign") != 0
    own = _issue(hub, "x509-foreign", tmp_path)
    assert _cert_connect(creds, own, "x509-foreign") == 0


def test_a_certificate_for_one_device_gains_nothing_on_another(
    hub: RunningHub, tmp_path: Path
) -> None:
    create_device(hub, "x509-a")
    create_device(hub, "x509-b")
    victim = device_client(hub, "x509-b", tmp_path)
    victim.connect(20)
    cert_a = _issue(hub, "x509-a", tmp_path)
    creds = credentials(hub, "x509-a")
    spy = recorder(
        creds["cert_port"],
        ["devices/x509-b/#", "devices/+/messages/#", "#", "devices/x509-a/#"],
        client_id="x509-b",  # claims the other device's client id
        tls_ca=creds["ca_file"],
        cert=(str(cert_a[0]), str(cert_a[1])),
    )
    try:
        assert spy.subscribed.wait(30)
        assert spy.connect_rc == [0]
        # writes into B's space, then a message of its own that the hub stores after them
        spy.client.publish(p.telemetry_topic("x509-b", {p.SYS_MESSAGE_ID: "forged"}), b"x", qos=1)
        spy.client.publish(p.twin_reported_topic("x509-b", "r1"), b'{"pwned": true}', qos=1)
        spy.client.publish(p.telemetry_topic("x509-a", {p.SYS_MESSAGE_ID: "own"}), b"y", qos=1)
        assert wait_until(lambda: "own" in _stored_ids(hub, "x509-a"))
        assert "forged" not in _stored_ids(hub, "x509-b")
        # B was not taken over: it still talks to the hub on its own connection
        assert victim.connected
        assert victim.patch_twin_reported_properties({"still": "mine"}) >= 2
        assert "pwned" not in victim.get_twin()["reported"]
        # the hub's pushes to B, then a cloud-to-device message to A: A sees only its own
        with hub.client() as api:
            api.patch_twin("x509-b", {"properties": {"desired": {"secret": 1}}})
            assert wait_until(lambda: victim.get_twin()["desired"].get("secret") == 1)
            api.request("POST", "/devices/x509-a/messages/devicebound", json={"payload": {"hi": 1}})
        assert wait_until(
            lambda: any(t.startswith("devices/x509-a/messages/devicebound") for t in spy.topics())
        )
        assert [t for t in spy.topics() if not t.startswith("devices/x509-a/")] == []
    finally:
        spy.client.loop_stop()
        victim.shutdown()


def test_revoked_certificate_is_disconnected_and_refused(hub: RunningHub, tmp_path: Path) -> None:
    create_device(hub, "x509-dev")
    creds = credentials(hub, "x509-dev")
    cert = _issue(hub, "x509-dev", tmp_path)
    client = _x509_client(hub, "x509-dev", cert, tmp_path)
    client.connect(20)
    try:
        sent = client.send_message(b"signed")
        assert client.wait_for_outbox_empty(20)
        assert wait_until(lambda: sent in _stored_ids(hub, "x509-dev"))
        with hub.client() as api:
            api.request("DELETE", "/devices/x509-dev/certificate")
        assert wait_until(lambda: not client.connected, 30)
        assert _cert_connect(creds, cert, "x509-dev") != 0
        # a newly issued certificate works again
        assert _cert_connect(creds, _issue(hub, "x509-dev", tmp_path / "new"), "x509-dev") == 0
    finally:
        client.shutdown()


def test_disabled_or_deleted_x509_device_is_dropped_and_refused(
    hub: RunningHub, tmp_path: Path
) -> None:
    create_device(hub, "x509-hold")
    creds = credentials(hub, "x509-hold")
    cert = _issue(hub, "x509-hold", tmp_path)
    client = _x509_client(hub, "x509-hold", cert, tmp_path, client_id="not-my-id")
    client.connect(20)
    try:
        with hub.client() as api:
            api.update_device("x509-hold", {"deviceId": "x509-hold", "status": "disabled"})
        assert wait_until(lambda: not client.connected, 30)
        assert _cert_connect(creds, cert, "x509-hold") != 0
        with hub.client() as api:
            api.update_device("x509-hold", {"deviceId": "x509-hold", "status": "enabled"})
        assert wait_until(lambda: client.connected, 20)
        assert client.patch_twin_reported_properties({"back": True}) >= 2
        with hub.client() as api:
            api.delete_device("x509-hold")
        assert wait_until(lambda: not client.connected, 30)
        assert _cert_connect(creds, cert, "x509-hold") != 0
    finally:
        client.shutdown()
