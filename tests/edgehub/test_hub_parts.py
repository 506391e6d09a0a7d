"""The edge hub's decisions without a broker: credentials, ACL, route sinks, upstream runs,
MQTT packet parsing."""

from __future__ import annotations

import base64
import json
import stat
import struct
from pathlib import Path

import pytest

from edge_agent.edgehub import acl
from edge_agent.edgehub.credentials import (
    EdgeEndpoints,
    ModuleCredentials,
    key_bytes,
    module_env,
)
from edge_agent.edgehub.dispatch import output_message, plan_deliveries
from edge_agent.edgehub.forwarder import module_runs
from edge_agent.edgehub.method_relay import response_body
from edge_agent.edgehub.routes import RouteTable
from edge_agent.edgehub.store_and_forward import Stored
from edgefleet import module_topics as t
from edgefleet import mqtt_packets as mp
from edgefleet import protocol as p


def test_credentials_are_issued_once_kept_owner_only_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    creds = ModuleCredentials(path)
    first = creds.issue("a")
    assert creds.issue("a") == first and creds.get("a") == first.key and creds.get("b") is None
    assert len(base64.b64decode(first.key, validate=True)) == 32  # what IoT Hub's SDKs accept
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = ModuleCredentials(path)
    assert again.identity("a") == first and again.modules() == ["a"]
    where = EdgeEndpoints("127.0.0.1", 1883, "edge.local", "hub.example", "unix:///run/w.sock")
    env = module_env("dev", "a", first, where)
    assert env["EdgeHubConnectionString"] == (
        "HostName=hub.example;GatewayHostName=edge.local;DeviceId=dev;ModuleId=a;"
        f"SharedAccessKey={first.key}"
    )
    assert env["IOTEDGE_MODULEGENERATIONID"] == first.generation_id
    assert env["IOTEDGE_WORKLOADURI"] == "unix:///run/w.sock"
    assert (env["IOTEDGE_EDGEHUBHOST"], env["IOTEDGE_EDGEHUBPORT"]) == ("127.0.0.1", "1883")


def test_keys_stored_by_earlier_versions_keep_working(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"old": "not-base64_key-from-token_urlsafe"}))
    creds = ModuleCredentials(path)
    ident = creds.identity("old")
    assert ident is not None and ident.key == "not-base64_key-from-token_urlsafe"
    assert acl.may_connect(creds.get("old"), b"not-base64_key-from-token_urlsafe")
    assert key_bytes(ident.key) == b"not-base64_key-from-token_urlsafe"
    # the generation id given to it is kept
    assert ModuleCredentials(path).identity("old") == ident


def test_a_module_connects_with_its_own_password_and_stays_in_its_subtree() -> None:
    assert acl.may_connect("pw", b"pw")
    assert not acl.may_connect("pw", b"pw!") and not acl.may_connect(None, b"pw")
    assert not acl.may_connect("pw", None)
    own = t.acl_prefix("dev", "a")
    assert acl.may_use_topic("dev", "a", own + "outputs/o/")
    assert not acl.may_use_topic("dev", "a", t.acl_prefix("dev", "b") + "outputs/o/")


def test_the_plan_sends_one_item_upstream_and_one_message_per_module_input() -> None:
    table = RouteTable.from_desired(
        {
            "up": {"route": "FROM /messages/* INTO $upstream", "priority": 2},
            "b": 'FROM /messages/modules/a/* INTO BrokeredEndpoint("/modules/b/inputs/i")',
            "other": 'FROM /messages/modules/z/* INTO BrokeredEndpoint("/modules/c/inputs/i")',
        }
    )
    local = t.LocalTopic("output", "a", "o", {"k": "v"})
    message, bag = output_message("dev", "a", local, b"{}")
    assert bag[p.SYS_OUTPUT_NAME] == "o" and bag[p.SYS_CONNECTION_MODULE_ID] == "a"
    plan = plan_deliveries(table.evaluate(message), "dev", "a", bag, b"{}", 60.0)
    [item] = plan.upstream
    assert (item.module, item.priority, item.ttl_secs) == ("a", 2, 60.0)
    assert [target for target, _ in plan.modules] == ["b"]
    assert t.parse_local(plan.modules[0][1]).bag == {**bag, p.SYS_INPUT_NAME: "i"}


def test_upstream_runs_keep_the_order_and_split_where_the_module_changes() -> None:
    def stored(seq: int, module: str) -> Stored:
        return Stored(seq, 0, module, p.encode_property_bag({"n": str(seq)}), b"x", 0.0, 1.0)

    runs = module_runs([stored(1, "a"), stored(2, "a"), stored(3, "b"), stored(4, "a")])
    assert [(m, [msg.custom_properties["n"] for msg in msgs]) for m, msgs in runs] == [
        ("a", ["1", "2"]),
        ("b", ["3"]),
        ("a", ["4"]),
    ]


def test_a_method_response_body_is_json_or_text() -> None:
    assert response_body(b'{"x": 1}') == {"x": 1}
    assert response_body(b"") is None
    assert response_body(b"not json") == "not json"


def _s(text: str) -> bytes:
    return struct.pack("!H", len(text)) + text.encode()


def test_connect_publish_and_subscribe_bodies_parse() -> None:
    body = _s("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30) + _s("cid") + _s("u") + _s("pw")
    assert mp.parse_connect(body) == mp.Connect("cid", "u", b"pw", True, 30)
    assert mp.parse_connect(_s("HTTP") + bytes([4, 0, 0, 0])) is None
    packet = mp.publish_packet("a/b", b"hi", 1, 7)
    publish = mp.parse_publish(packet[0] & 0x0F, packet[2:])
    assert publish == mp.Publish("a/b", b"hi", 1, 7)
    with pytest.raises(mp.ProtocolViolation):
        mp.parse_publish(0x04, packet[2:])
    assert mp.parse_subscribe(struct.pack("!H", 3) + _s("a/#") + bytes([2])) == (3, [("a/#", 1)])
    with pytest.raises(mp.ProtocolViolation):
        mp.parse_subscribe(struct.pack("!H", 3) + _s("a/#"))
    assert mp.parse_unsubscribe(struct.pack("!H", 4) + _s("a") + _s("b")) == (4, ["a", "b"])
    assert mp.parse_puback(b"\x00\x09") == 9 and mp.parse_puback(b"") is None
    assert mp.encode_length(321) == bytes([0xC1, 0x02])
