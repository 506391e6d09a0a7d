"""Hostile inputs, generated from a seed: pure functions, no I/O.

Text inputs are well-formed seeds (routes, queries, topics) mutated the way a fuzzer does: a
character or a span replaced, deleted, repeated or wrapped, a hostile token inserted. MQTT inputs
are whole packets, sent after a valid CONNECT of an authenticated device: well-framed PUBLISHes
with hostile topics and payloads, and frames that break MQTT 3.1.1 itself (lengths that lie, a
reserved packet type, invalid UTF-8, a second CONNECT).
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from edgefleet import mqtt_packets as mp

ROUTE_SEEDS = [
    "FROM /messages/* INTO $upstream",
    'FROM /messages/modules/filter/outputs/out1 INTO BrokeredEndpoint("/modules/b/inputs/in1")',
    "SELECT * FROM /messages/* WHERE temperature > 30 AND $body.a.b = 'x' INTO $upstream",
    "FROM /twinChangeNotifications WHERE twin_change_includes(properties.reported.x) "
    "INTO $upstream",
    "FROM /messages/* WHERE NOT (a = 1 OR b <> 'y') AND is_defined($body.z) INTO $upstream",
    "FROM /messages/* WHERE length($connectionDeviceId) >= 3 AND c ?? 'd' = 'd' INTO $upstream",
]
QUERY_SEEDS = [
    "SELECT * FROM devices",
    "SELECT * FROM devices WHERE tags.location.region = 'US' AND properties.reported.t > 20",
    "SELECT properties.reported.status, COUNT() AS n FROM devices "
    "GROUP BY properties.reported.status",
    "SELECT TOP 5 deviceId, tags.a AS a FROM devices.modules WHERE moduleId = 'm1'",
    "SELECT * FROM devices WHERE configurations.[[cfg-1]].status = 'Applied'",
    "SELECT * FROM devices WHERE IS_DEFINED(tags.x) OR STARTSWITH(deviceId, 'cam') "
    "AND tags.list[0] IN ['a', 1, null]",
]
TOPIC_SEEDS = [
    "edgefleet/dev-1/messages/events/a=1&$.ct=application%2Fjson",
    "edgefleet/dev-1/twin/reported/?$rid=1",
    "edgefleet/dev-1/twin/res/200/?$rid=1&$version=2",
    "edgefleet/dev-1/methods/res/200/?$rid=1",
    "edgefleet/dev-1/modules/m1/outputs/out1/a=1",
    "$iothub/twin/PATCH/properties/reported/?$rid=1",
    "devices/dev-1/messages/events/a=1&$.mid=7",
]
# tokens that broke parsers somewhere before: digits of other scripts, escapes, wildcards,
# quotes, nesting, huge numbers, NULs
HOSTILE_TOKENS = [
    "\u00b2", "\u0663", "\x00", "\ud7ff", "'", '"', "\\", "(", ")", "[", "]", "[[", "]]", "#",
    "+", "/", "//", "..", "%", "%zz", "%E2%82", "$", "$body", "?$rid=", "&", "=", " AND ", " OR ",
    "NOT ", "1e999", "-0", "99999999999999999999999", "0x", "*", "??", ",", ".", ":", "\n", "\t",
]  # fmt: skip


def mutate_text(rng: random.Random, seed: str, rounds: int = 3) -> str:
    """``seed`` changed ``1..rounds`` times by a random edit."""
    text = seed
    for _ in range(rng.randint(1, rounds)):
        at = rng.randint(0, len(text))
        end = min(len(text), at + rng.randint(0, 8))
        edit = rng.randrange(7)
        if edit == 0:
            text = text[:at] + rng.choice(HOSTILE_TOKENS) + text[at:]
        elif edit == 1:
            text = text[:at] + text[end:]
        elif edit == 2:
            text = text[:at] + rng.choice(HOSTILE_TOKENS) + text[end:]
        elif edit == 3:
            text = text[:at] + text[at:end] * rng.randint(2, 50) + text[end:]
        elif edit == 4:
            depth = rng.choice((10, 100, 1000))
            text = text[:at] + "(" * depth + text[at:end] + ")" * depth + text[end:]
        elif edit == 5:
            text = text[:at] + chr(rng.randint(1, 0x2FFF)) + text[at:]
        else:
            text = text[:at] + text[end:] + text[at:end]
    return text


def text_inputs(seeds: list[str], count: int, seed: int) -> Iterator[str]:
    """``count`` mutations of ``seeds`` (the seeds themselves first)."""
    rng = random.Random(seed)
    yield from seeds[:count]
    for _ in range(count - min(count, len(seeds))):
        yield mutate_text(rng, rng.choice(seeds))


# ------------------------------------------------------------------------------ MQTT 3.1.1


def connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    flags = 0x02  # clean session
    payload = mp.string(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += mp.string(username.encode())
    if password is not None:
        flags |= 0x40
        payload += mp.string(password.encode())
    body = mp.string(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + payload
    return mp.packet(0x10, body)


def publish_packet(topic: bytes, payload: bytes, qos: int = 1, packet_id: int = 1) -> bytes:
    body = mp.string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return mp.packet(0x30 | (qos << 1), body)


PINGREQ = b"\xc0\x00"


@dataclass(frozen=True)
class MqttCase:
    """Bytes an authenticated device sends after its CONNECT, and what the case is."""

    kind: str
    packets: bytes


def _deep_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def _payloads(rng: random.Random, max_message_bytes: int) -> list[tuple[str, bytes]]:
    return [
        ("oversized payload", b"x" * (max_message_bytes + 1 + rng.randint(0, 1024))),
        ("random bytes", rng.randbytes(rng.randint(0, 4096))),
        ("invalid utf-8 json", b'{"a": "\xff\xfe"}'),
        ("deeply nested json", _deep_json(rng.choice((1000, 20000)))),
        ("huge number", b'{"a": ' + b"9" * 5000 + b"}"),
        ("not json", b"{not json"),
        ("empty", b""),
        ("json array", json.dumps(list(range(1000))).encode()),
    ]


def own_topics(device: str) -> list[str]:
    """Topics of the contract a device may publish to."""
    root = f"edgefleet/{device}"
    return [
        f"{root}/messages/events/a=1",
        f"{root}/twin/reported/?$rid=7",
        f"{root}/twin/get/?$rid=8",
        f"{root}/methods/res/200/?$rid=9",
        f"{root}/modules/m1/messages/events/",
    ]


def mqtt_cases(
    device: str, other: str, count: int, seed: int, max_message_bytes: int
) -> list[MqttCase]:
    """``count`` hostile cases for ``device``; ``other`` is another device of the same hub."""
    rng = random.Random(seed)
    mine, theirs = own_topics(device)[0].encode(), own_topics(other)[0].encode()
    everything = b"\x00\x02" + mp.string(b"#") + b"\x01"
    other_tree = b"\x00\x03" + mp.string(f"edgefleet/{other}/#".encode()) + b"\x01"
    fixed = [
        MqttCase("publish to another device", publish_packet(theirs, b"{}")),
        MqttCase("publish with a wildcard", publish_packet(mine[:-3] + b"#", b"{}")),
        MqttCase("publish with an empty topic", publish_packet(b"", b"{}")),
        MqttCase("invalid utf-8 topic", publish_packet(b"edgefleet/\xff\xfe/x", b"{}")),
        MqttCase("NUL in topic", publish_packet(mine + b"\x00", b"{}")),
        MqttCase("length longer than sent", b"\x32\xff\xff\x7f" + b"\x00\x05abc"),
        MqttCase("topic length past the packet", mp.packet(0x32, b"\xff\xff" + b"abc")),
        MqttCase("reserved packet type", mp.packet(0xF0, b"")),
        MqttCase("second connect", connect_packet(device, None, None)),
        MqttCase("qos 3", mp.packet(0x36, mp.string(mine) + b"\x00\x01{}")),
        MqttCase("subscribe to everything", mp.packet(0x82, everything)),
        MqttCase("subscribe to another device", mp.packet(0x82, other_tree)),
        MqttCase("subscribe without filters", mp.packet(0x82, b"\x00\x04")),
        MqttCase("remaining length of five bytes", b"\x30\xff\xff\xff\xff\x7f"),
    ]
    cases = fixed[:count]
    topics = own_topics(device)
    while len(cases) < count:
        pick = rng.randrange(3)
        if pick == 0:
            kind, payload = rng.choice(_payloads(rng, max_message_bytes))
            topic = rng.choice(topics)
            cases.append(MqttCase(kind, publish_packet(topic.encode(), payload, packet_id=7)))
        elif pick == 1:
            topic = mutate_text(rng, rng.choice(topics))
            cases.append(
                MqttCase("mutated topic", publish_packet(topic.encode(), b"{}", packet_id=8))
            )
        else:
            good = publish_packet(rng.choice(topics).encode(), b'{"a": 1}', packet_id=9)
            cut = rng.randint(1, len(good) - 1)
            cases.append(
                MqttCase(
                    "truncated or corrupted frame", good[:cut] + rng.randbytes(rng.randint(0, 8))
                )
            )
    return cases
