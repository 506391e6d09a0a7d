"""The hub's MQTT front end on 8883 with mosquitto (and an external broker): Microsoft's device
SDK (unmodified, from its own virtualenv), a hostile hand-written client, our own device SDK
through the byte relay, and garbage on the port, all at once against one hub."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from composition.processes import free_loopback
from edgefleet import protocol as p
from tests.iothub_sdk.test_device_sdk import (
    REFUSED,
    _host,
    _hostile,
    _issue_certificate,
    _key,
    _sdk_round_trip,
    _snoop_refused_wide_filters,
    _snoop_stays_confined,
)
from tests.support.device_sdk import (
    IOTHUB_PORT,
    RawIotHubClient,
    SdkProcess,
    device_connection_string,
    device_token,
)
from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import (
    create_device,
    credentials,
    device_client,
    mosquitto,
    stop_managed_mosquitto,
    stored_message_ids,
    wait_until,
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    tmp = tmp_path_factory.mktemp("hub-front-end")
    host = free_loopback(IOTHUB_PORT)
    try:
        with running_hub(tmp, host=host, mqtt_port=IOTHUB_PORT, broker="mosquitto") as running:
            yield running
    finally:
        stop_managed_mosquitto(tmp / "hub")


def _tls(hub: RunningHub) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(hub.ca_file))
    raw = socket.create_connection((_host(hub), IOTHUB_PORT), timeout=10)
    return context.wrap_socket(raw, server_hostname=_host(hub))


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the peer closes the connection (reads end) rather than answering."""
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    finally:
        sock.close()


def _bad_clients(hub: RunningHub) -> None:
    """Garbage, an oversized CONNECT, a PUBLISH before any CONNECT, and plain text where TLS is
    expected: each connection is closed."""
    garbage = _tls(hub)
    garbage.sendall(b"\x00\xff" * 64)
    assert _closed_by_peer(garbage)
    oversized = _tls(hub)  # a CONNECT announcing 16 MiB
    oversized.sendall(bytes([0x10, 0x80, 0x80, 0x80, 0x08]) + b"\x00" * 1024)
    assert _closed_by_peer(oversized)
    early = _tls(hub)
    early.sendall(bytes([0x30, 5, 0, 1, ord("x"), 1, 2]))
    assert _closed_by_peer(early)
    plain = socket.create_connection((_host(hub), IOTHUB_PORT), timeout=10)
    plain.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert _closed_by_peer(plain)


def _mqtt5_telemetry(hub: RunningHub, device_id: str, message_id: str) -> None:
    """A paho MQTT 5 client with edgefleet's credentials: relayed to mosquitto unchanged."""
    creds = credentials(hub, device_id)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(creds["username"], creds["password"])
    client.tls_set(ca_certs=str(hub.ca_file))
    client.connect(creds["host"], creds["port"])
    client.loop_start()
    try:
        topic = p.telemetry_topic(device_id, {p.SYS_MESSAGE_ID: message_id})
        client.publish(topic, b"{}", qos=1).wait_for_publish(20)
    finally:
        client.disconnect()
        client.loop_stop()


def test_sdk_native_device_and_a_snoop_through_the_front_end(
    hub: RunningHub, tmp_path: Path
) -> None:
    create_device(hub, "fe-sdk")
    create_device(hub, "fe-snoop")
    create_device(hub, "fe-native")
    create_device(hub, "fe-mqtt5")
    native = device_client(hub, "fe-native", tmp_path)
    snoop = _hostile(hub, "fe-snoop")
    try:
        native.connect(20)
        _snoop_refused_wide_filters(snoop, "fe-sdk")
        assert snoop.subscribe("$iothub/twin/res/#") == [1]

        _bad_clients(hub)
        assert snoop.client.is_connected() and native.connected

        # our own SDK through the byte relay: telemetry stored, twin round trip
        sent = native.send_message({"t": 1})
        assert native.patch_twin_reported_properties({"via": "front end"}) > 0
        assert wait_until(lambda: sent in stored_message_ids(hub, "fe-native"))
        _mqtt5_telemetry(hub, "fe-mqtt5", "v5-1")
        assert wait_until(lambda: "v5-1" in stored_message_ids(hub, "fe-mqtt5"))
        with hub.client() as api:
            twin = api.get_twin("fe-native")
            assert twin["properties"]["reported"]["via"] == "front end"
            assert api.get_device("fe-native")["connectionState"] == "Connected"

        cs = device_connection_string(_host(hub), "fe-sdk", _key(hub, "fe-sdk"))
        _sdk_round_trip(hub, "fe-sdk", SdkProcess("--ca", str(hub.ca_file), "--cs", cs))
        _snoop_stays_confined(hub, snoop, "fe-sdk", rid=4)
        assert native.connected
    finally:
        snoop.close()
        native.shutdown()


def test_sdk_device_with_an_x509_certificate_through_the_front_end(
    hub: RunningHub, tmp_path: Path
) -> None:
    cert, key = _issue_certificate(hub, "fe-x509", tmp_path)
    sdk = SdkProcess("--ca", str(hub.ca_file), "--x509", str(cert), str(key), _host(hub), "fe-x509")
    _sdk_round_trip(hub, "fe-x509", sdk)


def test_expired_token_and_disabled_device_close_relayed_connections(hub: RunningHub) -> None:
    create_device(hub, "fe-short")
    token = device_token(_host(hub), "fe-short", _key(hub, "fe-short"), int(time.time()) + 3)
    short = RawIotHubClient(_host(hub), hub.ca_file, "fe-short", token)
    create_device(hub, "fe-disabled")
    token = device_token(
        _host(hub), "fe-disabled", _key(hub, "fe-disabled"), int(time.time()) + 600
    )
    disabled = RawIotHubClient(_host(hub), hub.ca_file, "fe-disabled", token)
    try:
        assert short.connect() == 0
        assert disabled.connect() == 0
        with hub.client() as api:
            assert wait_until(
                lambda: api.get_device("fe-disabled")["connectionState"] == "Connected"
            )
            api.update_device("fe-disabled", {"deviceId": "fe-disabled", "status": "disabled"})
            assert disabled.disconnected.wait(20)
            assert wait_until(
                lambda: api.get_device("fe-disabled")["connectionState"] == "Disconnected"
            )
        assert short.disconnected.wait(20)
    finally:
        short.close()
        disabled.close()


def test_front_end_before_an_external_broker(tmp_path: Path) -> None:
    """``--broker mqtt://...``: a broker the hub does not run (anonymous here); the front end on
    8883 still admits only the registry's credentials and confines IoT Hub-dialect devices."""
    with mosquitto(tmp_path / "broker") as broker:
        host = free_loopback(IOTHUB_PORT)
        url = f"mqtt://{p.HUB_USERNAME}@127.0.0.1:{broker.port}"
        with running_hub(tmp_path, host=host, mqtt_port=IOTHUB_PORT, broker=url) as ext:
            create_device(ext, "ext-sdk")
            token = device_token(host, "ext-sdk", _key(ext, "ext-sdk"), int(time.time()) + 600)
            raw = RawIotHubClient(host, ext.ca_file, "ext-sdk", token)
            wrong = RawIotHubClient(host, ext.ca_file, "ext-sdk", token.replace("sig=", "sig=x"))
            try:
                assert wrong.connect() in (135, -1)
                assert raw.connect() == 0
                assert raw.subscribe("devices/#") == [REFUSED]
                assert raw.subscribe("$iothub/twin/res/#") == [1]
                raw.client.publish("$iothub/twin/GET/?$rid=1", b"", qos=1)
                assert wait_until(lambda: len(raw.messages) == 1)
                assert raw.messages[0][0] == "$iothub/twin/res/200/?$rid=1"
                raw.client.publish("devices/ext-sdk/messages/events/$.mid=ext-1", b"{}", qos=1)
                assert wait_until(lambda: "ext-1" in stored_message_ids(ext, "ext-sdk"))
            finally:
                raw.close()
                wrong.close()
