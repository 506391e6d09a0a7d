"""The device protocol against a real hub, once with mosquitto and once with the embedded broker."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet import protocol as p
from edgefleet.sdk.device_client import ClientError, DeviceClient, MethodRequest, MethodResponse
from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import (
    create_device,
    credentials,
    device_client,
    stop_managed_mosquitto,
    wait_until,
)


@pytest.fixture(scope="module", params=["mosquitto", "embedded"])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp(f"hub-{request.param}")
    try:
        with running_hub(tmp, broker=request.param) as running:
            yield running
    finally:
        stop_managed_mosquitto(tmp / "hub")


def _messages(hub: RunningHub, device_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    with hub.client() as client:
        body = client.request(
            "GET", f"/devices/{device_id}/messages", params={"limit": limit}
        ).json()
    out: list[dict[str, Any]] = body["messages"]
    return out


@pytest.fixture
def connected(hub: RunningHub, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    device_id = "dev-" + request.node.name.split("[")[0][-20:].replace("_", "-")
    create_device(hub, device_id)
    client = device_client(hub, device_id, tmp_path)
    client.connect(20)
    try:
        yield device_id, client
    finally:
        client.shutdown()


def test_telemetry_is_stored_once_with_properties(hub: RunningHub, connected: Any) -> None:
    device_id, client = connected
    with hub.client() as api:
        before = api.request("GET", "/messaging/stats").json()
    ids = [
        client.send_message(p.Message.from_body({"n": i}, custom_properties={"k": "v&w"}))
        for i in range(20)
    ]
    # the same message id twice is stored once
    dup = p.Message(b"dup", message_id="fixed-id-1")
    client.send_message(dup)
    client.send_message(p.Message(b"dup again", message_id="fixed-id-1"))
    assert client.wait_for_outbox_empty(20)
    assert wait_until(lambda: len(_messages(hub, device_id)) >= 21)

    def stats() -> dict[str, Any]:
        with hub.client() as api:
            out: dict[str, Any] = api.request("GET", "/messaging/stats").json()
        return out

    # the hub counts the copy it dropped, and only what it really stored
    assert wait_until(lambda: stats()["duplicates"] > before["duplicates"])
    after = stats()
    assert after["duplicates"] - before["duplicates"] >= 1  # more if a reconnect resent some
    assert after["stored"] - before["stored"] == 21
    stored = _messages(hub, device_id)
    assert [m["messageId"] for m in stored].count("fixed-id-1") == 1
    assert set(ids) <= {m["messageId"] for m in stored}
    first = next(m for m in stored if m["messageId"] == ids[0])
    assert first["properties"] == {"k": "v&w"}
    assert first["systemProperties"]["$.ct"] == "application/json"
    assert first["body"] == '{"n":0}'
    with hub.client() as api:
        page = api.request(
            "GET",
            f"/devices/{device_id}/messages",
            params={"since": stored[0]["sequenceNumber"], "limit": 5},
        ).json()
    assert [m["sequenceNumber"] for m in page["messages"]] == [
        m["sequenceNumber"] for m in stored[1:6]
    ]


def test_oversized_message_is_rejected_and_counted(hub: RunningHub, connected: Any) -> None:
    device_id, client = connected
    with hub.client() as api:
        before = api.request("GET", "/messaging/stats").json()["rejectedTooLarge"]
    # Published directly: the SDK itself refuses to queue an oversized message.
    client._mqtt.publish(
        p.telemetry_topic(device_id, {p.SYS_MESSAGE_ID: "big"}),
        b"x" * (p.MAX_MESSAGE_BYTES + 1),
        qos=1,
    )
    with pytest.raises(ValueError):
        client.send_message(b"x" * (p.MAX_MESSAGE_BYTES + 1))
    client.send_message(b"small")
    assert client.wait_for_outbox_empty(20)

    def counted() -> bool:
        with hub.client() as api:
            return bool(api.request("GET", "/messaging/stats").json()["rejectedTooLarge"] > before)

    assert wait_until(counted)
    assert wait_until(lambda: len(_messages(hub, device_id)) == 1)
    assert all(m["messageId"] != "big" for m in _messages(hub, device_id))


def test_twin_get_reported_and_desired_push(hub: RunningHub, connected: Any) -> None:
    device_id, client = connected
    patches: list[dict[str, Any]] = []
    client.on_twin_desired_properties_patch_received = patches.append
    twin = client.get_twin()
    assert twin["reported"]["$version"] == 1
    version = client.patch_twin_reported_properties({"fw": {"version": "1.2"}})
    assert version == 2
    assert client.patch_twin_reported_properties({"fw": {"state": "ok"}}) == 3
    with hub.client() as api:
        api.patch_twin(device_id, {"properties": {"desired": {"fps": 7}}})
        reported = api.get_twin(device_id)["properties"]["reported"]
    assert reported["fw"] == {"version": "1.2", "state": "ok"}
    assert wait_until(lambda: any(x.get("fps") == 7 for x in patches))
    pushed = next(x for x in patches if x.get("fps") == 7)
    assert pushed["$version"] == client.get_twin()["desired"]["$version"]


def test_offline_device_gets_full_twin_on_reconnect_and_ignores_stale(
    hub: RunningHub, tmp_path: Path
) -> None:
    create_device(hub, "dev-offline")
    received: list[dict[str, Any]] = []
    first = device_client(hub, "dev-offline", tmp_path)
    first.on_twin_desired_properties_patch_received = received.append
    first.connect(20)
    first.shutdown()
    with hub.client() as api:
        api.patch_twin("dev-offline", {"properties": {"desired": {"mode": "eco"}}})
        api.patch_twin("dev-offline", {"properties": {"desired": {"level": 3}}})
    again = device_client(hub, "dev-offline", tmp_path)
    got: list[dict[str, Any]] = []
    again.on_twin_desired_properties_patch_received = got.append
    again.connect(20)
    try:
        # the full twin fetched on reconnect, or the patches queued in the persistent session
        # (whichever arrives first; the other is then stale or redundant): same desired state
        def desired_state() -> dict[str, Any]:
            state: dict[str, Any] = {}
            for g in list(got):
                state.update(g)
            return state

        assert wait_until(lambda: desired_state().get("mode") == "eco", timeout=60)
        assert wait_until(lambda: desired_state().get("level") == 3, timeout=60)
        latest = max(g["$version"] for g in got)
        # a push older than what the device has seen is ignored
        again._deliver_desired(
            p.Topic(p.Kind.TWIN_DESIRED, "dev-offline", version=latest - 1), b'{"mode": "old"}'
        )
        assert all(g.get("mode") != "old" for g in got)
    finally:
        again.shutdown()


def test_a_reconnect_takes_over_a_session_whose_old_connection_is_still_open(
    hub: RunningHub, tmp_path: Path
) -> None:
    """A device whose old TCP connection the broker still holds (a half-open link, or a client
    that reconnects before the broker has seen it go) gets everything on the new one."""
    create_device(hub, "dev-takeover")
    creds = credentials(hub, "dev-takeover")
    stale = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=creds["username"], clean_session=False
    )
    stale.username_pw_set(creds["username"], creds["password"])
    stale.tls_set(ca_certs=creds["ca_file"])
    subscribed = threading.Event()
    stale.on_subscribe = lambda *_args: subscribed.set()
    stale.on_connect = lambda c, *_args: c.subscribe("devices/dev-takeover/#", qos=1)
    stale.connect(creds["host"], creds["port"])
    deadline = time.monotonic() + 20
    while not subscribed.is_set() and time.monotonic() < deadline:
        stale.loop(0.1)
    assert subscribed.is_set()  # the stale connection stays open, never served again
    client = device_client(hub, "dev-takeover", tmp_path)
    pushed: list[dict[str, Any]] = []
    inbox: list[p.Message] = []
    client.on_twin_desired_properties_patch_received = pushed.append
    client.on_message_received = inbox.append
    client.connect(20)
    try:
        assert wait_until(lambda: client.get_twin(5)["desired"]["$version"] >= 1, timeout=30)
        with hub.client() as api:
            api.patch_twin("dev-takeover", {"properties": {"desired": {"fps": 9}}})
            api.request(
                "POST", "/devices/dev-takeover/messages/devicebound", json={"payload": {"n": 1}}
            )
        assert wait_until(lambda: any(x.get("fps") == 9 for x in pushed))
        # (MQTT 3.1.1 lets a broker send one copy per matching filter: the stale connection's
        # devices/dev-takeover/# is still part of the session)
        assert wait_until(lambda: bool(inbox))
        assert inbox[0].json() == {"n": 1}
        for n in range(3):
            assert client.patch_twin_reported_properties({"n": n}, timeout=10) >= 2
    finally:
        client.shutdown()
        stale.disconnect()


def test_a_c2d_message_the_device_did_not_acknowledge_comes_again_on_resume(
    hub: RunningHub,
) -> None:
    """QoS 1 to a device: a message whose PUBACK never came before the connection ended is
    sent again when the device resumes its session [MQTT-4.4.0-1]."""
    create_device(hub, "dev-unacked")
    creds = credentials(hub, "dev-unacked")

    def connect(manual_ack: bool) -> tuple[mqtt.Client, list[mqtt.MQTTMessage]]:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=creds["username"],
            clean_session=False,
            manual_ack=manual_ack,
        )
        client.username_pw_set(creds["username"], creds["password"])
        client.tls_set(ca_certs=creds["ca_file"])
        got: list[mqtt.MQTTMessage] = []
        subscribed = threading.Event()
        client.on_subscribe = lambda *_args: subscribed.set()
        client.on_connect = lambda c, *_args: c.subscribe(
            "devices/dev-unacked/messages/devicebound/#", qos=1
        )
        client.on_message = lambda _c, _u, msg: got.append(msg)
        client.connect(creds["host"], creds["port"])
        client.loop_start()
        assert subscribed.wait(20)
        return client, got

    first, got = connect(manual_ack=True)  # receives, never acknowledges
    with hub.client() as api:
        api.request("POST", "/devices/dev-unacked/messages/devicebound", json={"payload": {"n": 1}})
    assert wait_until(lambda: bool(got))
    first.disconnect()
    first.loop_stop()
    again, got_again = connect(manual_ack=False)
    try:
        assert wait_until(lambda: any(json.loads(m.payload) == {"n": 1} for m in got_again))
    finally:
        again.disconnect()
        again.loop_stop()


def test_direct_methods_answer_time_out_and_need_presence(hub: RunningHub, connected: Any) -> None:
    device_id, client = connected
    release = threading.Event()

    def handler(req: MethodRequest) -> MethodResponse:
        if req.name == "slow":
            release.wait(10)
        return MethodResponse.create_from_method_request(req, 201, {"got": req.payload})

    client.on_method_request_received = handler
    with hub.client() as api:
        assert wait_until(lambda: api.get_device(device_id)["connectionState"] == "Connected")
        ok = api.request(
            "POST",
            f"/twins/{device_id}/methods",
            json={"methodName": "echo", "payload": {"a": [1, 2]}, "responseTimeoutInSeconds": 10},
        ).json()
        assert ok == {"status": 201, "payload": {"got": {"a": [1, 2]}}}
        slow = api._http.post(
            f"/twins/{device_id}/methods",
            json={"methodName": "slow", "responseTimeoutInSeconds": 1},
        )
        assert slow.status_code == 504
        release.set()
        missing = api._http.post("/twins/no-such-device/methods", json={"methodName": "x"})
        assert missing.status_code == 404
    client.shutdown()
    with hub.client() as api:
        assert wait_until(lambda: api.get_device(device_id)["connectionState"] == "Disconnected")
        offline = api._http.post(
            f"/twins/{device_id}/methods", json={"methodName": "echo", "connectTimeoutInSeconds": 1}
        )
        assert offline.status_code == 404
        assert offline.json()["errorCode"] == "DeviceNotOnline"
        assert api.get_device(device_id)["lastActivityTime"]


def test_modules_share_the_device_connection(hub: RunningHub, connected: Any) -> None:
    device_id, client = connected
    with hub.client() as api:
        api.create_module(device_id, "filter")
    module = client.module("filter")
    pushes: list[dict[str, Any]] = []
    module.on_twin_desired_properties_patch_received = pushes.append
    module.on_method_request_received = lambda req: MethodResponse.create_from_method_request(
        req, 200, {"module": req.module_id}
    )
    assert module.patch_twin_reported_properties({"temp": 1}) == 2
    mid = module.send_message(p.Message(b"m1", output_name="out1"))
    with hub.client() as api:
        api.patch_twin(device_id, {"properties": {"desired": {"x": 1}}}, module_id="filter")
        twin = api.get_twin(device_id, "filter")
        assert twin["properties"]["reported"]["temp"] == 1
        res = api.request(
            "POST",
            f"/twins/{device_id}/modules/filter/methods",
            json={"methodName": "hi", "responseTimeoutInSeconds": 10},
        ).json()
        assert res == {"status": 200, "payload": {"module": "filter"}}
    assert wait_until(lambda: any(x.get("x") == 1 for x in pushes))
    assert client.get_twin()["reported"].get("temp") is None  # the device twin is separate
    assert client.wait_for_outbox_empty(20)
    assert wait_until(lambda: any(m["messageId"] == mid for m in _messages(hub, device_id)))
    stored = next(m for m in _messages(hub, device_id) if m["messageId"] == mid)
    assert stored["moduleId"] == "filter"
    assert stored["systemProperties"]["$.on"] == "out1"


def test_cloud_to_device_message_reaches_the_device(hub: RunningHub, connected: Any) -> None:
    device_id, client = connected
    got: list[p.Message] = []
    client.on_message_received = got.append
    with hub.client() as api:
        api.request(
            "POST",
            f"/devices/{device_id}/messages/devicebound",
            json={"payload": {"cmd": "blink"}, "properties": {"prio": "high"}},
        )
    assert wait_until(lambda: bool(got))
    assert got[0].json() == {"cmd": "blink"}
    assert got[0].custom_properties == {"prio": "high"}


def test_both_keys_connect(hub: RunningHub, tmp_path: Path) -> None:
    device = create_device(hub, "dev-keys")
    secondary = device["authentication"]["symmetricKey"]["secondaryKey"]
    client: DeviceClient = device_client(hub, "dev-keys", tmp_path, key=secondary)
    client.connect(20)
    try:
        assert client.patch_twin_reported_properties({"via": "secondary"}) == 2
    finally:
        client.shutdown()


def test_disabled_device_is_disconnected(hub: RunningHub, tmp_path: Path) -> None:
    create_device(hub, "dev-disable")
    client = device_client(hub, "dev-disable", tmp_path)
    client.connect(20)
    try:
        with hub.client() as api:
            api.update_device("dev-disable", {"deviceId": "dev-disable", "status": "disabled"})
        assert wait_until(lambda: not client.connected, 30)
        time.sleep(1.0)
        assert not client.connected
    finally:
        client.shutdown()


def test_malformed_requests_get_error_answers(hub: RunningHub, connected: Any) -> None:
    device_id, client = connected
    rid = client._new_rid()
    with pytest.raises(ClientError) as bad_json:
        client._request(p.twin_reported_topic(device_id, rid), b"{not json", rid, 15)
    assert bad_json.value.status == 400
    rid = client._new_rid()
    with pytest.raises(ClientError) as not_object:
        client._request(p.twin_reported_topic(device_id, rid), b"[1, 2]", rid, 15)
    assert not_object.value.status == 400
    with pytest.raises(ClientError) as no_module:
        client.module("no-such-module").get_twin(timeout=15)
    assert no_module.value.status == 404
    # a message with non-UTF-8 body and an odd property bag is stored and read back
    client._mqtt.publish(
        p.telemetry_topic(device_id, {p.SYS_MESSAGE_ID: "bin-1", "k": "%ZZ/+#"}),
        b"\xff\xfe\x00",
        qos=1,
    )
    assert wait_until(lambda: any(m["messageId"] == "bin-1" for m in _messages(hub, device_id)))
    stored = next(m for m in _messages(hub, device_id) if m["messageId"] == "bin-1")
    assert stored["bodyEncoding"] == "base64" and stored["properties"] == {"k": "%ZZ/+#"}
    assert client.patch_twin_reported_properties({"ok": True}) >= 2


def test_deleted_device_takes_its_messages_along(hub: RunningHub, tmp_path: Path) -> None:
    create_device(hub, "dev-deleted")
    client = device_client(hub, "dev-deleted", tmp_path)
    client.connect(20)
    try:
        sent = client.send_message(b"before delete")
        assert client.wait_for_outbox_empty(20)
        assert wait_until(lambda: [m["messageId"] for m in _messages(hub, "dev-deleted")] == [sent])
        with hub.client() as api:
            api.delete_device("dev-deleted")
        assert wait_until(lambda: not client.connected, 30)
    finally:
        client.shutdown()
    create_device(hub, "dev-deleted")
    assert _messages(hub, "dev-deleted") == []
