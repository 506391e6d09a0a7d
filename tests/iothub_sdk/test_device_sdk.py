"""Microsoft's device SDK (azure-iot-device, unmodified, from its own virtualenv) against a hub
with the embedded broker, on 8883 of a loopback address of its own: SAS keys, X.509, a module
identity; isolation between devices, also against a hostile hand-written client; refusals."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from composition.processes import free_loopback
from tests.support.device_sdk import (
    IOTHUB_PORT,
    RawIotHubClient,
    SdkProcess,
    device_connection_string,
    device_token,
)
from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import create_device, wait_until

NOT_AUTHORIZED = 135  # paho reports MQTT 3.1.1's CONNACK 5 as reason code 0x87
REFUSED = 0x80


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    tmp = tmp_path_factory.mktemp("hub-device-sdk")
    host = free_loopback(IOTHUB_PORT)
    with running_hub(tmp, host=host, mqtt_port=IOTHUB_PORT, broker="embedded") as running:
        yield running


def _host(hub: RunningHub) -> str:
    return str(httpx.URL(hub.url).host)


def _key(hub: RunningHub, device_id: str, module_id: str | None = None) -> str:
    with hub.client() as api:
        body = api.get_module(device_id, module_id) if module_id else api.get_device(device_id)
    key: str = body["authentication"]["symmetricKey"]["primaryKey"]
    return key


def _state(hub: RunningHub, device_id: str) -> str:
    with hub.client() as api:
        state: str = api.get_device(device_id)["connectionState"]
    return state


def _stored(hub: RunningHub, device_id: str) -> list[dict[str, Any]]:
    with hub.client() as api:
        body = api.request("GET", f"/devices/{device_id}/messages", params={"limit": 100}).json()
    messages: list[dict[str, Any]] = body["messages"]
    return messages


def _sdk_round_trip(hub: RunningHub, device_id: str, sdk: SdkProcess) -> None:
    """Everything the driver does with a device client, checked from the hub's side."""
    sdk.next("connected")
    sdk.next("sent")
    twin = sdk.next("twin")["twin"]
    assert set(twin) == {"desired", "reported"} and "$version" in twin["desired"]
    sdk.next("reported")
    sdk.next("ready")
    with hub.client() as api:
        reported = api.get_twin(device_id)["properties"]["reported"]
        assert reported["firmware"] == "1.2.3" and reported["nested"] == {"x": 1}
        assert wait_until(lambda: _state(hub, device_id) == "Connected")

        version = api.patch_twin(device_id, {"properties": {"desired": {"rate": 5}}})
        patch = sdk.next("desired")["patch"]
        assert patch == {"rate": 5, "$version": version["properties"]["desired"]["$version"]}

        answer = api.request(
            "POST",
            f"/twins/{device_id}/methods",
            json={"methodName": "reboot", "payload": {"delay": 3}, "responseTimeoutInSeconds": 20},
        ).json()
        assert answer == {"status": 201, "payload": {"echo": {"delay": 3}, "method": "reboot"}}
        assert sdk.next("method")["name"] == "reboot"

        sent = api.request(
            "POST",
            f"/devices/{device_id}/messages/devicebound",
            json={"payload": {"cmd": "on"}, "properties": {"prio": "high & soon"}},
        ).json()
        c2d = sdk.next("c2d")
        assert json.loads(c2d["data"]) == {"cmd": "on"}
        assert c2d["messageId"] == sent["messageId"]
        assert c2d["properties"] == {"prio": "high & soon"}

    (stored,) = [m for m in _stored(hub, device_id) if m["messageId"] == "sdk-msg-1"]
    assert stored["systemProperties"] == {
        "$.mid": "sdk-msg-1",
        "$.cid": "corr-7",
        "$.ct": "application/json",
        "$.ce": "utf-8",
    }
    assert stored["properties"] == {"level": "high & mighty", "site": "a/b"}
    assert json.loads(stored["body"]) == {"temp": 21.5}
    sdk.stop()
    assert wait_until(lambda: _state(hub, device_id) == "Disconnected")


def _hostile(hub: RunningHub, device_id: str) -> RawIotHubClient:
    token = device_token(_host(hub), device_id, _key(hub, device_id), int(time.time()) + 600)
    client = RawIotHubClient(_host(hub), hub.ca_file, device_id, token)
    assert client.connect() == 0
    return client


def _snoop_refused_wide_filters(snoop: RawIotHubClient, victim: str) -> None:
    """Filters reaching beyond the snoop's own identity are refused (SUBACK 0x80)."""
    for wide in ("$iothub/#", "devices/#", "#", f"devices/{victim}/#", "devices/+/twin/res/#"):
        assert snoop.subscribe(wide) == [REFUSED], wide


def _snoop_stays_confined(hub: RunningHub, snoop: RawIotHubClient, victim: str, rid: int) -> None:
    """After the victim's round trip: nothing of it reached the snoop, the snoop's own twin
    request is answered with its own twin, and publishing as the victim closes the snoop's
    connection with nothing stored."""
    assert snoop.messages == []  # nothing of the victim's twin, methods or C2D reached it
    snoop.client.publish(f"$iothub/twin/GET/?$rid={rid}", b"", qos=1)
    assert wait_until(lambda: len(snoop.messages) == 1)
    topic, payload = snoop.messages[0]
    assert topic == f"$iothub/twin/res/200/?$rid={rid}"
    assert "firmware" not in json.loads(payload)["reported"]
    snoop.client.publish(f"devices/{victim}/messages/events/$.mid=forged", b"x", qos=1)
    assert snoop.disconnected.wait(20)
    assert all(m["messageId"] != "forged" for m in _stored(hub, victim))


def test_sdk_device_with_a_key_while_another_device_snoops(hub: RunningHub) -> None:
    create_device(hub, "sdk-b")
    create_device(hub, "snoop-a")
    snoop = _hostile(hub, "snoop-a")
    try:
        _snoop_refused_wide_filters(snoop, "sdk-b")
        for own in (
            "$iothub/twin/res/#",
            "$iothub/twin/PATCH/properties/desired/#",
            "$iothub/methods/POST/#",
            "devices/snoop-a/messages/devicebound/#",
        ):
            assert snoop.subscribe(own) == [1], own

        cs = device_connection_string(_host(hub), "sdk-b", _key(hub, "sdk-b"))
        _sdk_round_trip(hub, "sdk-b", SdkProcess("--ca", str(hub.ca_file), "--cs", cs))
        _snoop_stays_confined(hub, snoop, "sdk-b", rid=9)
    finally:
        snoop.close()


def test_sdk_device_over_websockets(tmp_path: Path) -> None:
    """``websockets=True``: the SDK speaks MQTT over wss://HOST:443/$iothub/websocket (the
    port is fixed); a hub with ``--mqtt-ws-port 443`` on a loopback address of its own."""
    host = free_loopback(443)
    with running_hub(tmp_path, host=host, mqtt_ws_port=443, broker="embedded") as ws_hub:
        create_device(ws_hub, "sdk-ws")
        cs = device_connection_string(host, "sdk-ws", _key(ws_hub, "sdk-ws"))
        sdk = SdkProcess("--ca", str(ws_hub.ca_file), "--cs", cs, "--websockets")
        try:
            _sdk_round_trip(ws_hub, "sdk-ws", sdk)
        finally:
            sdk.stop()


def _issue_certificate(hub: RunningHub, device_id: str, tmp_path: Path) -> tuple[Path, Path]:
    """A new device with a certificate of the hub CA: (certificate file, key file)."""
    create_device(hub, device_id)
    with hub.client() as api:
        issued = api.request("POST", f"/devices/{device_id}/certificate").json()
    cert, key = tmp_path / f"{device_id}.pem", tmp_path / f"{device_id}.key"
    cert.write_text(issued["certificate"])
    key.write_text(issued["privateKey"])
    return cert, key


def test_sdk_device_with_an_x509_certificate(hub: RunningHub, tmp_path: Path) -> None:
    cert, key = _issue_certificate(hub, "sdk-x509", tmp_path)
    sdk = SdkProcess(
        "--ca", str(hub.ca_file), "--x509", str(cert), str(key), _host(hub), "sdk-x509"
    )
    _sdk_round_trip(hub, "sdk-x509", sdk)

    # the certificate names one device: presented with another client id it admits nothing
    create_device(hub, "sdk-x509-other")
    other = SdkProcess(
        "--ca",
        str(hub.ca_file),
        "--x509",
        str(cert),
        str(key),
        _host(hub),
        "sdk-x509-other",
        "--connect-only",
    )
    assert other.next("error", timeout=90)["stage"] == "connect"
    other.stop()


def test_module_identity_through_the_module_client(hub: RunningHub) -> None:
    create_device(hub, "sdk-edge")
    with hub.client() as api:
        api.create_module("sdk-edge", "filter")
    cs = device_connection_string(_host(hub), "sdk-edge", _key(hub, "sdk-edge", "filter"), "filter")
    sdk = SdkProcess("--ca", str(hub.ca_file), "--cs", cs, "--module")
    try:
        sdk.next("connected")
        sdk.next("sent")
        assert set(sdk.next("twin")["twin"]) == {"desired", "reported"}
        sdk.next("reported")
        sdk.next("ready")
        with hub.client() as api:
            twin = api.get_twin("sdk-edge", "filter")
            assert twin["properties"]["reported"]["firmware"] == "1.2.3"
            assert "firmware" not in api.get_twin("sdk-edge")["properties"]["reported"]
            api.patch_twin("sdk-edge", {"properties": {"desired": {"gain": 2}}}, "filter")
            assert sdk.next("desired")["patch"]["gain"] == 2
            # its device is not connected: the module's own connection takes the call
            answer = api.request(
                "POST",
                "/twins/sdk-edge/modules/filter/methods",
                json={"methodName": "calibrate", "payload": 7, "responseTimeoutInSeconds": 20},
            ).json()
            assert answer == {"status": 201, "payload": {"echo": 7, "method": "calibrate"}}
            assert sdk.next("method")["name"] == "calibrate"
        (stored,) = _stored(hub, "sdk-edge")
        assert stored["moduleId"] == "filter" and stored["messageId"] == "sdk-msg-1"
    finally:
        sdk.stop()


def test_wrong_key_foreign_and_expired_tokens_are_refused(hub: RunningHub) -> None:
    create_device(hub, "sdk-refused")
    create_device(hub, "sdk-victim")
    host, key = _host(hub), _key(hub, "sdk-refused")
    later = int(time.time()) + 600
    wrong_key = _key(hub, "sdk-victim")
    attempts = {
        "wrong key": ("sdk-refused", device_token(host, "sdk-refused", wrong_key, later)),
        "expired": ("sdk-refused", device_token(host, "sdk-refused", key, int(time.time()) - 5)),
        "another device's id": ("sdk-victim", device_token(host, "sdk-refused", key, later)),
        "no token": ("sdk-refused", ""),
    }
    for what, (client_id, token) in attempts.items():
        client = RawIotHubClient(host, hub.ca_file, client_id, token)
        try:
            assert client.connect() in (NOT_AUTHORIZED, -1), what
        finally:
            client.close()


def test_token_expiry_and_disabling_close_connections(hub: RunningHub) -> None:
    create_device(hub, "sdk-short")
    host, key = _host(hub), _key(hub, "sdk-short")
    short = RawIotHubClient(
        host, hub.ca_file, "sdk-short", device_token(host, "sdk-short", key, int(time.time()) + 3)
    )
    try:
        assert short.connect() == 0
        assert short.disconnected.wait(30), "the connection outlived its SAS token"
    finally:
        short.close()

    live = _hostile(hub, "sdk-short")
    try:
        with hub.client() as api:
            api.update_device("sdk-short", {"deviceId": "sdk-short", "status": "disabled"})
        assert live.disconnected.wait(30), "a disabled device stayed connected"
    finally:
        live.close()
    again = RawIotHubClient(
        host, hub.ca_file, "sdk-short", device_token(host, "sdk-short", key, int(time.time()) + 600)
    )
    try:
        assert again.connect() in (NOT_AUTHORIZED, -1)
    finally:
        again.close()
