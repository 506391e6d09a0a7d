"""Property-based fuzzing of what a client controls in a topic: the contract's topic parser, the
property bag, the edge hub's local topics and IoT Hub's dialect.

No input crashes a parser (only ProtocolError, or a result), none takes long, and no hostile
topic of an IoT Hub-dialect connection maps outside that connection's own subtree.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet import iothub_dialect as dialect
from edgefleet import module_topics, protocol
from edgefleet.protocol import ProtocolError

EXAMPLES = 200

R = protocol.ROOT
# well-formed topics of every kind; the fuzzer replaces, drops or adds levels in them
TEMPLATES = [
    f"{R}/dev-1/messages/events/a=1&$.ct=application%2Fjson",
    f"{R}/dev-1/messages/devicebound/$.mid=7",
    f"{R}/dev-1/twin/get/?$rid=1",
    f"{R}/dev-1/twin/reported/?$rid=1",
    f"{R}/dev-1/twin/desired/?$version=3",
    f"{R}/dev-1/twin/res/200/?$rid=1&$version=2",
    f"{R}/dev-1/methods/POST/reboot/?$rid=1",
    f"{R}/dev-1/methods/res/200/?$rid=1",
    f"{R}/dev-1/presence",
    f"{R}/dev-1/modules/m1/messages/events/a=1",
    f"{R}/dev-1/modules/m1/outputs/out1/a=1",
    f"{R}/dev-1/modules/m1/inputs/in1/a=1",
    f"{R}/dev-1/modules/m1/refused/507/$.mid=1",
    f"{R}/dev-1/modules/m1/invoke/res/200/?$rid=1",
    f"{R}/dev-1/modules/m1/invoke/dev-1/$device/echo/?$rid=1",
    f"{R}/dev-1/modules/m1/twin/res/200/?$rid=1",
    "$iothub/twin/GET/?$rid=1",
    "$iothub/twin/PATCH/properties/reported/?$rid=1",
    "$iothub/twin/res/#",
    "$iothub/twin/PATCH/properties/desired/#",
    "$iothub/methods/POST/#",
    "$iothub/methods/res/200/?$rid=1",
    f"{R}/dev-1/messages/devicebound/#",
    f"{R}/dev-1/modules/m1/inputs/#",
]
# hostile levels: digits of other scripts, wildcards, other identities, empty, escapes, NULs
HOSTILE = [
    "\u00b2",
    "\u0663",
    "-1",
    "1e3",
    "99999999999999999999",
    "+",
    "#",
    "",
    "..",
    "dev-2",
    "m2",
    "modules",
    "?$rid=",
    "$version=x",
    "%",
    "%zz",
    "a=%E2%82",
    "\x00",
    "$iothub",
]


def mutations() -> list[str]:
    """Every template with one level replaced by, or preceded by, a hostile one, or dropped."""
    out: set[str] = set()
    for template in TEMPLATES:
        levels = template.split("/")
        for at in range(len(levels) + 1):
            if at < len(levels):
                out.add("/".join(levels[:at] + levels[at + 1 :]))
            for bad in HOSTILE:
                out.add("/".join([*levels[:at], bad, *levels[at:]]))
                if at < len(levels):
                    out.add("/".join([*levels[:at], bad, *levels[at + 1 :]]))
    return sorted(out)


MUTATED = mutations()
_LEVELS = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=8))


@st.composite
def topics(draw: st.DrawFn) -> str:
    levels = draw(st.sampled_from(TEMPLATES)).split("/")
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(levels) - 1))
        levels[at] = draw(_LEVELS)
    return "/".join(levels)


TOPICS = st.one_of(topics(), st.text(max_size=60))


def crashes(parse: Callable[[str], object], inputs: list[str]) -> list[str]:
    """The inputs on which ``parse`` raised anything but ProtocolError."""
    found = []
    for topic in inputs:
        try:
            parse(topic)
        except ProtocolError:
            pass
        except Exception as exc:  # noqa: BLE001 - what the fuzzer looks for
            found.append(f"{topic!r}: {type(exc).__name__}: {exc}")
    return found


def test_every_single_level_mutation_of_every_topic_kind() -> None:
    assert len(MUTATED) > 5000
    assert crashes(protocol.parse_topic, MUTATED) == []
    assert crashes(module_topics.parse_local, MUTATED) == []
    assert crashes(lambda t: protocol.message_from_topic(t, b"x"), MUTATED) == []
    for ident in (dialect.IotHubIdentity("dev-1"), dialect.IotHubIdentity("dev-1", "m1")):
        for topic in MUTATED:
            for mapped in (
                dialect.inbound_publish(ident, topic),
                dialect.inbound_filter(ident, topic),
            ):
                if mapped is not None:
                    assert _own(ident, mapped) and "+" not in mapped, (topic, mapped)
            published = dialect.inbound_publish(ident, topic)
            if published is not None:
                assert "#" not in published
                protocol.parse_topic(published)  # the hub receives a topic of the contract
            if dialect.outbound_topic(ident, topic) is not None:
                assert _own(ident, topic), topic


IDENTITIES = st.sampled_from(
    [dialect.IotHubIdentity("dev-1"), dialect.IotHubIdentity("dev-1", "m1")]
)


@settings(max_examples=EXAMPLES, deadline=200)
@given(TOPICS)
def test_the_contract_parser_raises_only_protocol_errors(topic: str) -> None:
    try:
        parsed = protocol.parse_topic(topic)
    except ProtocolError:
        return
    assert topic.split("/")[1] == parsed.device_id


@settings(max_examples=EXAMPLES, deadline=200)
@given(TOPICS, st.binary(max_size=64))
def test_messages_from_any_topic_and_payload(topic: str, payload: bytes) -> None:
    try:
        protocol.message_from_topic(topic, payload)
    except ProtocolError:
        pass


@settings(max_examples=EXAMPLES, deadline=200)
@given(TOPICS)
def test_the_edge_hubs_local_topics_raise_only_protocol_errors(topic: str) -> None:
    try:
        local = module_topics.parse_local(topic)
    except ProtocolError:
        return
    assert local.module_id == topic.split("/")[3]


@settings(max_examples=EXAMPLES, deadline=200)
@given(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5))
def test_property_bags_round_trip(bag: dict[str, str]) -> None:
    assert protocol.decode_property_bag(protocol.encode_property_bag(bag)) == bag


@settings(max_examples=EXAMPLES, deadline=200)
@given(st.text(max_size=60))
def test_any_property_bag_text_decodes(text: str) -> None:
    decoded = protocol.decode_property_bag(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in decoded.items())


def _own(ident: dialect.IotHubIdentity, topic: str) -> bool:
    rest = topic[len(ident.prefix) :]
    return topic.startswith(ident.prefix) and (
        ident.module_id is not None or not rest.startswith("modules/")
    )


@settings(max_examples=EXAMPLES, deadline=200)
@given(IDENTITIES, TOPICS)
def test_iothub_dialect_publishes_stay_inside_the_connections_identity(
    ident: dialect.IotHubIdentity, topic: str
) -> None:
    mapped = dialect.inbound_publish(ident, topic)
    if mapped is None:
        return
    assert _own(ident, mapped), mapped
    assert "#" not in mapped and "+" not in mapped
    protocol.parse_topic(mapped)  # what the hub receives is a topic of the contract


@settings(max_examples=EXAMPLES, deadline=200)
@given(IDENTITIES, TOPICS)
def test_iothub_dialect_subscriptions_stay_inside_the_connections_identity(
    ident: dialect.IotHubIdentity, topic_filter: str
) -> None:
    mapped = dialect.inbound_filter(ident, topic_filter)
    if mapped is not None:
        assert _own(ident, mapped) and "+" not in mapped, mapped


@settings(max_examples=EXAMPLES, deadline=200)
@given(IDENTITIES, TOPICS)
def test_iothub_dialect_delivers_only_the_connections_own_messages(
    ident: dialect.IotHubIdentity, topic: str
) -> None:
    if dialect.outbound_topic(ident, topic) is not None:
        assert _own(ident, topic)


@settings(max_examples=EXAMPLES, deadline=200)
@given(st.text(max_size=60), st.text(max_size=20))
def test_iothub_connects_raise_only_protocol_errors(username: str, client_id: str) -> None:
    try:
        connect = dialect.parse_connect(username, client_id)
    except ProtocolError:
        return
    assert connect.identity.client_id == client_id
