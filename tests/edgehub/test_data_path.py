"""The edge hub's fast data path keeps MQTT's and the store's promises: pipelined publishes are
all acknowledged, in order, once stored; packets split anywhere on the wire parse the same; an
idle connection is closed after its keep-alive, a pinging one is not."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from pathlib import Path

from edge_agent.edgehub.store_and_forward import Item, MessageStore
from edgefleet import mqtt_packets as mp
from edgefleet import protocol as p
from tests.support.edgehub import DEVICE, edge_hub


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _connect(user: str, password: str, keepalive: int) -> bytes:
    body = _s("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", keepalive) + _s(user)
    body += _s(user) + _s(password)
    return bytes([0x10]) + mp.encode_length(len(body)) + body


def _recv_packets(sock: socket.socket, count: int) -> list[tuple[int, int, bytes]]:
    buf = bytearray()
    packets: list[tuple[int, int, bytes]] = []
    while len(packets) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        got, used = mp.split_packets(buf)
        del buf[:used]
        packets += got
    return packets


def test_pipelined_publishes_are_all_acknowledged_in_order_once_stored(tmp_path: Path) -> None:
    route = "FROM /messages/modules/a/outputs/up INTO $upstream"
    with edge_hub(tmp_path, None, {"routes": {"up": route}}) as hub:
        key = hub.module_env("a")["IOTEDGE_MODULEKEY"]
        bag = p.encode_property_bag({p.SYS_MESSAGE_ID: "m"})
        topic = f"devices/{DEVICE}/modules/a/outputs/up/{bag}"
        burst = b"".join(mp.publish_packet(topic, b'{"n": %d}' % n, 1, n + 1) for n in range(300))
        with socket.create_connection(("127.0.0.1", hub.port), timeout=30) as sock:
            sock.sendall(_connect("a", key, 60) + burst)
            packets = _recv_packets(sock, 301)
            stats = hub.stats()
    assert packets[0][0] == mp.CONNACK
    acks = [mp.parse_puback(body) for ptype, _f, body in packets[1:] if ptype == mp.PUBACK]
    assert acks == list(range(1, 301))
    assert stats["queuedMessages"] == 300  # every acknowledged message is in the store


def test_packets_split_anywhere_on_the_wire_parse_the_same() -> None:
    rng = random.Random(5)
    sent = [
        (mp.PUBLISH, 2, struct.pack("!H", 1) + b"t" + struct.pack("!H", n) + bytes(size))
        for n, size in enumerate([0, 1, 126, 127, 128, 300, 16383, 16384, 70000])
    ]
    sent.append((mp.PINGREQ, 0, b""))
    wire = b"".join(bytes([t << 4 | f]) + mp.encode_length(len(b)) + b for t, f, b in sent)

    async def read_all(chunks: list[bytes]) -> list[tuple[int, int, bytes]]:
        stream = asyncio.StreamReader()
        for chunk in chunks:
            stream.feed_data(chunk)
        stream.feed_eof()
        reader = mp.PacketReader(stream)
        got: list[tuple[int, int, bytes]] = [await reader.next()]
        while len(got) < len(sent):
            got += await reader.batch()
        return got

    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(wire)), 12))
        chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
        assert asyncio.run(read_all(chunks)) == sent
    bad = bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
    try:
        mp.split_packets(bad)
    except mp.ProtocolViolation:
        pass
    else:
        raise AssertionError("a five-byte remaining length must be refused")


def test_read_packet_reads_each_length_encoding_and_refuses_a_five_byte_one() -> None:
    sent = [(mp.PUBLISH, 0, bytes(size)) for size in [0, 127, 128, 16383, 16384, 2_097_152]]
    wire = b"".join(bytes([t << 4 | f]) + mp.encode_length(len(b)) + b for t, f, b in sent)

    async def read(data: bytes, count: int) -> list[tuple[int, int, bytes]]:
        stream = asyncio.StreamReader()
        stream.feed_data(data)
        stream.feed_eof()
        return [await mp.read_packet(stream, limit=4_000_000) for _ in range(count)]

    assert asyncio.run(read(wire, len(sent))) == sent
    try:
        asyncio.run(read(bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), 1))
    except mp.ProtocolViolation:
        pass
    else:
        raise AssertionError("a five-byte remaining length must be refused")


def test_an_idle_connection_is_closed_after_its_keepalive_and_a_pinging_one_is_not(
    tmp_path: Path,
) -> None:
    with edge_hub(tmp_path, None, {"routes": {}}) as hub:
        key = hub.module_env("a")["IOTEDGE_MODULEKEY"]
        with socket.create_connection(("127.0.0.1", hub.port), timeout=30) as pinging:
            pinging.sendall(_connect("a", key, 1))
            assert _recv_packets(pinging, 1)[0][0] == mp.CONNACK
            with socket.create_connection(("127.0.0.1", hub.port), timeout=30) as idle:
                idle.sendall(_connect("b", hub.module_env("b")["IOTEDGE_MODULEKEY"], 1))
                assert _recv_packets(idle, 1)[0][0] == mp.CONNACK
                for _ in range(6):  # 3 s: twice the 1.5 s limit
                    pinging.sendall(bytes([mp.PINGREQ << 4, 0]))
                    assert _recv_packets(pinging, 1) == [(mp.PINGRESP, 0, b"")]
                    time.sleep(0.5)
                assert idle.recv(1) == b""  # closed by the hub


def test_the_store_returns_the_sequence_numbers_it_forwards_by(tmp_path: Path) -> None:
    store = MessageStore(tmp_path / "store.db")
    try:
        first = store.put_many([Item("a", f"n={n}", b"x", 1, 60) for n in range(5)])
        second = store.put_many([Item("a", "n=5", b"x", 0, 60)])
        assert [s.seq for s in store.peek(10)] == second + first
        store.remove(first[1:3] + first[1:2] + [10_000])
        assert len(store) == 4 and store.stats()["forwardedMessages"] == 2
    finally:
        store.close()


def test_an_extended_property_bag_encodes_as_the_whole_bag() -> None:
    rng = random.Random(3)
    alphabet = "ab$.%&=/ é-_~+"
    for _ in range(500):
        bag = {
            "".join(rng.choices(alphabet, k=rng.randint(1, 4))): "".join(
                rng.choices(alphabet, k=rng.randint(0, 5))
            )
            for _ in range(rng.randint(0, 4))
        }
        key = rng.choice([*bag, "$.on"]) if bag else "$.on"
        value = "".join(rng.choices(alphabet, k=3))
        encoded = p.encode_property_bag(bag)
        assert p.extend_property_bag(encoded, bag, key, value) == p.encode_property_bag(
            {**bag, key: value}
        )
