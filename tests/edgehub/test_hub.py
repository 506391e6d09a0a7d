"""The edge hub with real MQTT connections: routing, ACLs, twins, methods, store-and-forward."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet import protocol as p
from edgefleet.sdk.module_client import ClientError, Message, MethodResponse, ModuleClient
from tests.support.edgehub import DEVICE, assert_a_reaches_b, edge_hub, module, upstream_link


def _wait(cond: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def test_module_to_module_routes_filter_on_body_and_properties(tmp_path: Path) -> None:
    desired = {
        "routes": {
            "hot": 'FROM /messages/modules/sensor/outputs/temp WHERE $body.t > 20 AND site = "a" '
            'INTO BrokeredEndpoint("/modules/filter/inputs/hot")',
            "all": "FROM /messages/modules/sensor/* "
            'INTO BrokeredEndpoint("/modules/filter/inputs/all")',
        }
    }
    with edge_hub(tmp_path, None, desired) as hub:
        sensor, filt = module(hub, "sensor"), module(hub, "filter")
        got: list[tuple[str | None, Any, dict[str, str]]] = []
        filt.on_message_received = lambda m: got.append(
            (m.input_name, m.json(), m.custom_properties)
        )
        for t, site in ((25, "a"), (10, "a"), (30, "b")):
            msg = Message.from_body({"t": t}, custom_properties={"site": site})
            sensor.send_message_to_output(msg, "temp")
        assert _wait(lambda: len(got) == 4)
        assert ("hot", {"t": 25}, {"site": "a"}) in got
        assert [g[1]["t"] for g in got if g[0] == "all"] == [25, 10, 30]
        sensor.shutdown()
        filt.shutdown()


def test_a_module_cannot_act_as_another_or_connect_with_a_wrong_key(tmp_path: Path) -> None:
    desired = {
        "routes": {"r": 'FROM /messages/modules/b/* INTO BrokeredEndpoint("/modules/c/inputs/x")'}
    }
    with edge_hub(tmp_path, None, desired) as hub:
        a, c = module(hub, "a"), module(hub, "c")
        got: list[Message] = []
        c.on_message_received = got.append
        # publish on b's output topic with a's credentials: dropped by the ACL
        topic = f"devices/{DEVICE}/modules/b/outputs/o/"
        a._mqtt.publish(topic, b"spoof", qos=1).wait_for_publish(30)
        # subscribe to c's inputs with a's credentials: refused
        granted: list[Any] = []
        a._mqtt.on_subscribe = lambda cl, u, mid, rcs, props: granted.extend(rcs)
        a._mqtt.subscribe(f"devices/{DEVICE}/modules/c/inputs/#", 1)
        assert _wait(lambda: bool(granted))
        assert granted[0].is_failure
        time.sleep(0.3)
        assert got == []
        env = hub.module_env("b")
        bad = ModuleClient(DEVICE, "b", "127.0.0.1", hub.port, env["IOTEDGE_MODULEKEY"] + "x")
        with pytest.raises(ClientError):
            bad.connect(timeout=2)
        bad.shutdown()
        a.shutdown()
        c.shutdown()


def _twin_and_method_service(port: int, calls: list[Any]) -> mqtt.Client:
    """A stand-in for the hub's twin service on the upstream broker (the real MQTT path)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="twinsvc")
    reported: dict[str, Any] = {}

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        topic = p.parse_topic(msg.topic)
        if topic.kind is p.Kind.TWIN_GET:
            body = {"desired": {"$version": 3, "threshold": 7}, "reported": reported}
            c.publish(
                p.twin_response_topic(DEVICE, 200, topic.rid or "", None, topic.module_id),
                json.dumps(body),
                qos=1,
            )
        elif topic.kind is p.Kind.TWIN_REPORTED:
            reported.update(json.loads(msg.payload))
            c.publish(
                p.twin_response_topic(DEVICE, 204, topic.rid or "", 5, topic.module_id), b"", qos=1
            )
        elif topic.kind is p.Kind.METHOD_RESPONSE:
            calls.append((topic.status, json.loads(msg.payload)))

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(
        [
            (f"devices/{DEVICE}/modules/+/twin/get/#", 1),
            (f"devices/{DEVICE}/modules/+/twin/reported/#", 1),
            (f"devices/{DEVICE}/modules/+/methods/res/#", 1),
        ]
    )
    client.loop_start()
    return client


def test_twins_and_methods_are_relayed_between_module_and_hub(tmp_path: Path) -> None:
    with upstream_link(tmp_path) as up, edge_hub(tmp_path, up, {"routes": {}}) as hub:
        calls: list[Any] = []
        svc = _twin_and_method_service(up.broker.port, calls)
        m = module(hub, "m1")
        patches: list[dict[str, Any]] = []
        m.on_twin_desired_properties_patch_received = patches.append
        m.on_method_request_received = lambda req: MethodResponse.create_from_method_request(
            req, 200, {"echo": req.payload}
        )
        assert _wait(lambda: bool(hub.upstream and hub.upstream.connected))
        twin = m.get_twin(timeout=10)
        assert twin["desired"]["threshold"] == 7
        assert m.patch_twin_reported_properties({"state": "ok"}, timeout=10) == 5
        assert m.get_twin(timeout=10)["reported"] == {"state": "ok"}
        svc.publish(
            p.twin_desired_topic(DEVICE, 4, "m1"), json.dumps({"threshold": 9, "$version": 4})
        )
        # (a resync after the upstream connect may have relayed the full desired first)
        assert _wait(lambda: bool(patches) and patches[-1] == {"threshold": 9, "$version": 4})
        svc.publish(p.method_request_topic(DEVICE, "ping", "r1", "m1"), json.dumps({"x": 1}))
        assert _wait(lambda: calls == [(200, {"echo": {"x": 1}})])
        svc.loop_stop()
        m.shutdown()


def test_modules_invoke_methods_on_each_other(tmp_path: Path) -> None:
    with edge_hub(tmp_path, None, {"routes": {}}) as hub:
        a, b = module(hub, "a"), module(hub, "b")
        b.on_method_request_received = lambda req: MethodResponse.create_from_method_request(
            req, 201, {"got": req.payload, "name": req.name}
        )
        result = a.invoke_method({"methodName": "reset", "payload": {"n": 2}}, DEVICE, "b")
        assert result == {"status": 201, "payload": {"got": {"n": 2}, "name": "reset"}}
        with pytest.raises(ClientError):
            a.invoke_method({"methodName": "reset"}, DEVICE, "missing")
        a.shutdown()
        b.shutdown()


def _seqs(up: Any, module_id: str) -> list[int]:
    return [int(m.custom_properties["seq"]) for mod, m in up.messages() if mod == module_id]


def test_offline_messages_are_forwarded_by_priority_then_arrival(tmp_path: Path) -> None:
    desired = {
        "routes": {
            "alerts": {
                "route": "FROM /messages/modules/m/outputs/alerts INTO $upstream",
                "priority": 0,
            },
            "bulk": {
                "route": "FROM /messages/modules/m/outputs/bulk INTO $upstream",
                "priority": 5,
            },
        }
    }
    with upstream_link(tmp_path) as up:
        up.proxy.cut()
        with edge_hub(tmp_path, up, desired) as hub:
            m = module(hub, "m")
            for i in range(10):
                m.send_message_to_output(Message(b"b", custom_properties={"seq": str(i)}), "bulk")
            for i in range(10, 15):
                m.send_message_to_output(Message(b"a", custom_properties={"seq": str(i)}), "alerts")
            assert hub.stats()["queuedMessages"] == 15
            up.proxy.restore()
            assert _wait(lambda: len(up.ids()) >= 15, 30)
            assert _seqs(up, "m")[:15] == list(range(10, 15)) + list(range(10))
            assert _wait(lambda: hub.stats()["forwardedMessages"] == 15)
            m.shutdown()


def test_expired_messages_are_dropped_and_counted(tmp_path: Path) -> None:
    desired = {
        "routes": {
            "short": {
                "route": "FROM /messages/modules/m/outputs/short INTO $upstream",
                "timeToLiveSecs": 1,
            },
            "long": "FROM /messages/modules/m/outputs/long INTO $upstream",
        },
        "storeAndForwardConfiguration": {"timeToLiveSecs": 600},
    }
    with upstream_link(tmp_path) as up:
        up.proxy.cut()
        with edge_hub(tmp_path, up, desired) as hub:
            m = module(hub, "m")
            for i in range(20):
                m.send_message_to_output(Message(b"s", custom_properties={"seq": str(i)}), "short")
            m.send_message_to_output(Message(b"l", custom_properties={"seq": "100"}), "long")
            assert _wait(lambda: hub.stats()["expiredMessages"] == 20, 30)
            up.proxy.restore()
            assert _wait(lambda: len(up.ids()) >= 1, 30)
            time.sleep(0.5)
            assert _seqs(up, "m") == [100]
            m.shutdown()


def test_byte_cap_evicts_the_oldest_messages_first(tmp_path: Path) -> None:
    desired = {"routes": {"up": "FROM /messages/modules/* INTO $upstream"}}
    with upstream_link(tmp_path) as up:
        up.proxy.cut()
        with edge_hub(tmp_path, up, desired, store_max_bytes=12_000) as hub:
            m = module(hub, "m")
            for i in range(40):
                m.send_message_to_output(
                    Message(b"x" * 1000, custom_properties={"seq": str(i)}), "o"
                )
            stats = hub.stats()
            assert stats["queuedBytes"] <= 12_000
            assert stats["evictedMessages"] == 40 - stats["queuedMessages"] > 0
            kept = stats["queuedMessages"]
            up.proxy.restore()
            assert _wait(lambda: len(up.ids()) >= kept, 30)
            assert _seqs(up, "m") == list(range(40 - kept, 40))
            m.shutdown()


def test_invalid_routes_are_rejected_and_the_old_ones_kept(tmp_path: Path) -> None:
    from edge_agent.edgehub.routes import RouteError

    good = {"routes": {"r": 'FROM /messages/* INTO BrokeredEndpoint("/modules/b/inputs/i")'}}
    with edge_hub(tmp_path, None, good) as hub:
        with pytest.raises(RouteError, match="route 'bad'"):
            hub.apply_desired({"routes": {"bad": "FROM /messages WHERE temp > 1 INTO $upstream"}})
        assert_a_reaches_b(hub, b"1")


def test_messages_wait_for_a_module_that_has_not_connected_yet(tmp_path: Path) -> None:
    route = 'FROM /messages/modules/a/* INTO BrokeredEndpoint("/modules/late/inputs/i")'
    with edge_hub(tmp_path, None, {"routes": {"r": route}}) as hub:
        hub.module_env("late")
        a = module(hub, "a")
        for i in range(5):
            a.send_message_to_output(Message(str(i).encode()), "o")
        late = ModuleClient.create_from_environment(hub.module_env("late"))
        got: list[bytes] = []
        late.on_message_received = lambda m: got.append(m.data)
        late.connect(timeout=30)
        assert _wait(lambda: len(got) == 5)
        assert got == [b"0", b"1", b"2", b"3", b"4"]
        a.shutdown()
        late.shutdown()


def test_the_edge_hub_manifest_section_applies_as_the_agent_passes_it(tmp_path: Path) -> None:
    from edgefleet.manifest import parse_edge_hub

    with edge_hub(tmp_path, None, {}) as hub:
        hub.apply(
            parse_edge_hub(
                {
                    "schemaVersion": "1.1",
                    "routes": {
                        "r": 'FROM /messages/* INTO BrokeredEndpoint("/modules/b/inputs/i")'
                    },
                }
            )
        )
        assert hub.status() == "running"
        assert (tmp_path / "edgehub" / "store.db").exists()
        env = hub.module_env("a")
        assert (
            env["IOTEDGE_MODULEID"] == "a" and "SharedAccessKey=" in env["EdgeHubConnectionString"]
        )
        assert_a_reaches_b(hub)
    assert hub.status() == "stopped"
