"""Malformed and hostile input to the edge hub's local broker never takes it down."""

from __future__ import annotations

import random
import socket
import struct
from pathlib import Path

from edgefleet.mqtt_packets import topic_matches
from tests.support.edgehub import assert_a_reaches_b, edge_hub


def _connect_packet(client_id: str, user: str, password: str) -> bytes:
    def s(x: str) -> bytes:
        b = x.encode()
        return struct.pack("!H", len(b)) + b

    body = (
        s("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30) + s(client_id) + s(user) + s(password)
    )
    return bytes([0x10, len(body)]) + body


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(4096)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_garbage_bad_credentials_and_protocol_violations_are_refused(tmp_path: Path) -> None:
    route = 'FROM /messages/modules/a/* INTO BrokeredEndpoint("/modules/b/inputs/i")'
    with edge_hub(tmp_path, None, {"routes": {"r": route}}) as hub:
        port = hub.port
        key = hub.module_env("a")["IOTEDGE_MODULEKEY"]
        assert _exchange(port, _connect_packet("x", "a", key + "!")) == bytes([0x20, 2, 0, 4])
        assert _exchange(port, _connect_packet("x", "nobody", key)) == bytes([0x20, 2, 0, 4])
        assert _exchange(port, b"\x30\x05\x00\x01tx") == b""  # PUBLISH before CONNECT
        assert _exchange(port, b"\x10\xff\xff\xff\xff\x7f") == b""  # bad remaining length
        ok = _connect_packet("x", "a", key)
        # QoS 2 publish after a good CONNECT: connection closed, no PUBACK/PUBREC
        qos2 = b"\x34\x07\x00\x01t\x00\x01hi"
        assert _exchange(port, ok + qos2) == bytes([0x20, 2, 0, 0])
        rng = random.Random(7)
        for _ in range(200):
            _exchange(port, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))))
            _exchange(port, ok + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))))
        assert_a_reaches_b(hub, b"still works")


def test_topic_filters_match_like_mqtt() -> None:
    assert topic_matches("a/+/c", "a/b/c")
    assert topic_matches("a/#", "a/b/c")
    assert topic_matches("a/#", "a")
    assert not topic_matches("a/+", "a/b/c")
    assert not topic_matches("a/b", "a/b/c")
