"""The topic contract: every topic builds and parses back, property bags round-trip."""

import pytest

from edgefleet import protocol as p


def test_telemetry_topic_round_trips_properties_with_reserved_characters() -> None:
    msg = p.Message.from_body(
        {"t": 21.5},
        correlation_id="c/1",
        custom_properties={"alert level": "high&low", "ümlaut": "a=b/c#+"},
    )
    topic = msg.telemetry_topic("dev-1")
    assert topic.startswith("devices/dev-1/messages/events/")
    assert "#" not in topic and "+" not in topic
    parsed, back = p.message_from_topic(topic, msg.data)
    assert parsed.kind is p.Kind.TELEMETRY
    assert parsed.device_id == "dev-1" and parsed.module_id is None
    assert back.message_id == msg.message_id
    assert back.correlation_id == "c/1"
    assert back.content_type == "application/json"
    assert back.custom_properties == {"alert level": "high&low", "ümlaut": "a=b/c#+"}
    assert back.json() == {"t": 21.5}


def test_module_telemetry_carries_module_and_output() -> None:
    msg = p.Message(b"x", output_name="out1")
    parsed, back = p.message_from_topic(msg.telemetry_topic("d", "$edgeHub"), b"x")
    assert parsed.module_id == "$edgeHub"
    assert back.output_name == "out1"


def test_empty_bag_telemetry_parses() -> None:
    parsed = p.parse_topic(p.telemetry_topic("d"))
    assert parsed.kind is p.Kind.TELEMETRY and parsed.properties == {}


@pytest.mark.parametrize("module", [None, "$edgeAgent"])
def test_twin_and_method_topics_round_trip(module: str | None) -> None:
    t = p.parse_topic(p.twin_get_topic("d1", "r1", module))
    assert (t.kind, t.device_id, t.module_id, t.rid) == (p.Kind.TWIN_GET, "d1", module, "r1")
    t = p.parse_topic(p.twin_reported_topic("d1", "r2", module))
    assert (t.kind, t.rid) == (p.Kind.TWIN_REPORTED, "r2")
    t = p.parse_topic(p.twin_response_topic("d1", 204, "r2", version=7, module_id=module))
    assert (t.kind, t.status, t.rid, t.version) == (p.Kind.TWIN_RESPONSE, 204, "r2", 7)
    t = p.parse_topic(p.twin_desired_topic("d1", 9, module))
    assert (t.kind, t.version, t.module_id) == (p.Kind.TWIN_DESIRED, 9, module)
    t = p.parse_topic(p.method_request_topic("d1", "reboot", "r3", module))
    assert (t.kind, t.method, t.rid) == (p.Kind.METHOD_REQUEST, "reboot", "r3")
    t = p.parse_topic(p.method_response_topic("d1", 200, "r3", module))
    assert (t.kind, t.status, t.rid, t.module_id) == (p.Kind.METHOD_RESPONSE, 200, "r3", module)
    t = p.parse_topic(p.c2d_topic("d1", {"a": "b"}, module))
    assert (t.kind, t.properties) == (p.Kind.C2D, {"a": "b"})


def test_every_topic_carries_the_device_id_under_acl_pattern() -> None:
    topics = [
        p.telemetry_topic("d9"),
        p.c2d_topic("d9"),
        p.twin_get_topic("d9", "1"),
        p.twin_reported_topic("d9", "1"),
        p.twin_response_topic("d9", 200, "1"),
        p.twin_desired_topic("d9", 1),
        p.method_request_topic("d9", "m", "1"),
        p.method_response_topic("d9", 200, "1"),
        p.presence_topic("d9"),
    ]
    prefix = p.ACL_PATTERN.replace("%u", "d9").removesuffix("#")
    assert all(t.startswith(prefix) for t in topics)
    assert all(s.startswith(prefix) for s in p.device_subscriptions("d9"))


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "a#", "x" * 129])
def test_ids_that_would_escape_the_acl_are_refused(bad: str) -> None:
    with pytest.raises(p.ProtocolError):
        p.telemetry_topic(bad)


@pytest.mark.parametrize(
    "topic",
    ["foo/bar", "devices/d", "devices/d/twin/desired/", "devices/d/unknown/x", "devices//presence"],
)
def test_foreign_topics_are_rejected(topic: str) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_topic(topic)


def test_reserved_custom_property_is_refused() -> None:
    with pytest.raises(p.ProtocolError):
        p.Message(b"", custom_properties={"$.mid": "x"}).property_bag()


def test_presence_payload_round_trip() -> None:
    state, ts = p.parse_presence(p.presence_payload(p.ONLINE, "c"))
    assert state == p.ONLINE and ts is not None
    assert p.parse_presence(b"") == (p.OFFLINE, None)
    assert p.parse_presence(b"offline") == (p.OFFLINE, None)
