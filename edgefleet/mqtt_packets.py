"""MQTT 3.1.1 packets as the edge hub's local broker and the hub's MQTT front end read and write
them, and topic filter matching (the CONNECT of MQTT 5 is read too, for the front end).

Parsing raises ``ProtocolViolation`` (or ``struct.error``/``IndexError``/``ValueError`` for
malformed contents); the broker closes the connection on any of them.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from dataclasses import dataclass

MAX_PACKET = 512 * 1024

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

PINGRESP_PACKET = bytes([PINGRESP << 4, 0])
SUBSCRIPTION_REFUSED = 0x80

# CONNACK return codes
UNACCEPTABLE_PROTOCOL = 1
IDENTIFIER_REJECTED = 2
BAD_USER_NAME_OR_PASSWORD = 4
NOT_AUTHORIZED = 5


class ProtocolViolation(Exception):
    pass


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching with ``+`` and ``#``."""
    if pattern == topic:
        return True
    pp = pattern.split("/")
    tp = topic.split("/")
    for i, part in enumerate(pp):
        if part == "#":
            return True
        if i >= len(tp):
            return False
        if part != "+" and part != tp[i]:
            return False
    return len(pp) == len(tp)


# --- reading -------------------------------------------------------------------------------------


def split_packets(buf: bytes | bytearray) -> tuple[list[tuple[int, int, bytes]], int]:
    """The complete packets at the start of ``buf`` (type, flags, body) and how many bytes they
    take; an incomplete last packet is left for the next read."""
    packets: list[tuple[int, int, bytes]] = []
    pos, n = 0, len(buf)
    while pos + 2 <= n:
        found = decode_varint(buf, pos + 1)
        if found is None:
            break
        length, i = found
        if length > MAX_PACKET:
            raise ProtocolViolation("packet too large")
        end = i + length
        if end > n:
            break
        head = buf[pos]
        packets.append((head >> 4, head & 0x0F, bytes(buf[i:end])))
        pos = end
    return packets, pos


class PacketReader:
    """Reads a connection in large chunks and hands out every complete packet they hold, so a
    burst of publishes costs one read, not three awaits a packet."""

    CHUNK = 256 * 1024

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buf = bytearray()
        self._ready: deque[tuple[int, int, bytes]] = deque()

    async def batch(self) -> list[tuple[int, int, bytes]]:
        """Every packet that has arrived (at least one); the connection's end raises
        ``IncompleteReadError``."""
        while not self._ready:
            chunk = await self._reader.read(self.CHUNK)
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(self._buf), None)
            self._buf += chunk
            packets, used = split_packets(self._buf)
            del self._buf[:used]
            self._ready.extend(packets)
        out = list(self._ready)
        self._ready.clear()
        return out

    async def next(self) -> tuple[int, int, bytes]:
        """The next packet; the ones after it stay for ``batch``."""
        if not self._ready:
            self._ready.extend(await self.batch())
        return self._ready.popleft()


async def read_packet(
    reader: asyncio.StreamReader, limit: int = MAX_PACKET, expect: int | None = None
) -> tuple[int, int, bytes]:
    """The next packet: its type, flags and body (ProtocolViolation over ``limit`` bytes, or
    at once when its type is not ``expect``)."""
    head = await reader.readexactly(1)
    if expect is not None and head[0] >> 4 != expect:
        raise ProtocolViolation(f"packet type {head[0] >> 4} where {expect} was expected")
    prefix = b""
    found = None
    while found is None:
        prefix += await reader.readexactly(1)
        found = decode_varint(prefix, 0)
    length = found[0]
    if length > limit:
        raise ProtocolViolation("packet too large")
    body = await reader.readexactly(length) if length else b""
    return head[0] >> 4, head[0] & 0x0F, body


def decode_varint(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """MQTT's variable byte integer (a packet's remaining length, MQTT 5 property lengths) at
    ``pos`` and the position after it; None when ``data`` ends inside it. ProtocolViolation
    when it runs past the four bytes it may take."""
    value, mult = 0, 1
    for i in range(pos, pos + 4):
        if i >= len(data):
            return None
        byte = data[i]
        value += (byte & 0x7F) * mult
        if not byte & 0x80:
            return value, i + 1
        mult *= 128
    raise ProtocolViolation("bad variable byte integer")


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """A variable byte integer at ``pos`` of a whole packet, and the position after it."""
    found = decode_varint(data, pos)
    if found is None:
        raise ProtocolViolation("truncated variable byte integer")
    return found


def read_string(data: bytes, pos: int) -> tuple[bytes, int]:
    """A length-prefixed string at ``pos``, and the position after it."""
    if pos + 2 > len(data):
        raise ProtocolViolation("truncated string")
    (n,) = struct.unpack_from("!H", data, pos)
    end = pos + 2 + n
    if end > len(data):
        raise ProtocolViolation("truncated string")
    return data[pos + 2 : end], end


@dataclass(frozen=True)
class Connect:
    client_id: str
    username: str | None
    password: bytes | None
    clean: bool
    keepalive: int
    level: int = 4
    """The protocol level: 3 (MQTT 3.1), 4 (3.1.1) or 5."""


def parse_connect(body: bytes) -> Connect | None:
    """A CONNECT body; None when the protocol is not MQTT 3.1, 3.1.1 or 5 (refused, code 1)."""
    name, pos = read_string(body, 0)
    if name not in (b"MQTT", b"MQIsdp") or pos + 4 > len(body):
        return None
    level, cflags = body[pos], body[pos + 1]
    if level not in (3, 4, 5):
        return None
    (keepalive,) = struct.unpack_from("!H", body, pos + 2)
    pos += 4
    if level == 5:  # connect properties: read past them
        size, pos = read_varint(body, pos)
        pos += size
    cid_raw, pos = read_string(body, pos)
    if cflags & 0x04:  # will (properties,) topic and message: read past them
        if level == 5:
            size, pos = read_varint(body, pos)
            pos += size
        _, pos = read_string(body, pos)
        _, pos = read_string(body, pos)
    username = password = None
    if cflags & 0x80:
        raw_user, pos = read_string(body, pos)
        username = raw_user.decode(errors="replace")
    if cflags & 0x40:
        password, pos = read_string(body, pos)
    if pos != len(body):
        raise ProtocolViolation("CONNECT with trailing bytes")
    return Connect(
        cid_raw.decode(errors="replace"),
        username,
        password,
        bool(cflags & 0x02),
        keepalive,
        level,
    )


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    pid: int  # 0 for QoS 0


def parse_publish(flags: int, body: bytes) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos > 1:
        raise ProtocolViolation("QoS 2 is not supported by the edge hub")
    raw_topic, pos = read_string(body, 0)
    pid = 0
    if qos:
        (pid,) = struct.unpack_from("!H", body, pos)
        pos += 2
    return Publish(raw_topic.decode(errors="replace"), body[pos:], qos, pid)


def parse_puback(body: bytes) -> int | None:
    """The acknowledged packet id (None for a PUBACK too short to carry one)."""
    if len(body) < 2:
        return None
    (pid,) = struct.unpack_from("!H", body, 0)
    return int(pid)


def parse_subscribe(body: bytes) -> tuple[int, list[tuple[str, int]]]:
    """The packet id and the ``(filter, QoS)`` pairs (QoS capped at 1)."""
    (pid,) = struct.unpack_from("!H", body, 0)
    pos = 2
    filters: list[tuple[str, int]] = []
    while pos < len(body):
        raw, pos = read_string(body, pos)
        if pos >= len(body):
            raise ProtocolViolation("SUBSCRIBE without QoS")
        filters.append((raw.decode(errors="replace"), min(body[pos], 1)))
        pos += 1
    return pid, filters


def parse_unsubscribe(body: bytes) -> tuple[int, list[str]]:
    (pid,) = struct.unpack_from("!H", body, 0)
    pos = 2
    filters: list[str] = []
    while pos < len(body):
        raw, pos = read_string(body, pos)
        filters.append(raw.decode(errors="replace"))
    return pid, filters


# --- writing -------------------------------------------------------------------------------------


def encode_length(n: int) -> bytes:
    """MQTT's variable-length "remaining length"."""
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def publish_packet(
    topic: str, payload: bytes, qos: int, pid: int = 0, dup: bool = False, retain: bool = False
) -> bytes:
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t + (struct.pack("!H", pid) if qos else b"") + payload
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    return bytes([(PUBLISH << 4) | flags]) + encode_length(len(body)) + body


def connack(session_present: bool, code: int) -> bytes:
    return bytes([CONNACK << 4, 2, 1 if session_present else 0, code])


def puback(pid: int) -> bytes:
    return bytes([PUBACK << 4, 2]) + struct.pack("!H", pid)


def suback(pid: int, codes: bytes) -> bytes:
    return bytes([SUBACK << 4]) + encode_length(2 + len(codes)) + struct.pack("!H", pid) + codes


def unsuback(pid: int) -> bytes:
    return bytes([UNSUBACK << 4, 2]) + struct.pack("!H", pid)


def packet(head: int, body: bytes) -> bytes:
    """A whole packet from its first byte (type and flags) and its body."""
    return bytes([head]) + encode_length(len(body)) + body


def string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(raw)) + raw


def connect_packet(
    client_id: str,
    username: str,
    password: str,
    clean: bool,
    keepalive: int,
    will: tuple[str, bytes] | None = None,
) -> bytes:
    """An MQTT 3.1.1 CONNECT with user name and password; ``will``: a retained QoS 1 will."""
    flags = 0xC0 | (0x02 if clean else 0) | (0x04 | 0x08 | 0x20 if will else 0)
    body = string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + string(client_id)
    if will is not None:
        body += string(will[0]) + string(will[1])
    return packet(CONNECT << 4, body + string(username) + string(password))


def subscribe_packet(pid: int, filters: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", pid) + b"".join(string(f) + bytes([q]) for f, q in filters)
    return packet((SUBSCRIBE << 4) | 0x02, body)


def unsubscribe_packet(pid: int, filters: list[str]) -> bytes:
    return packet(
        (UNSUBSCRIBE << 4) | 0x02, struct.pack("!H", pid) + b"".join(map(string, filters))
    )


def parse_suback(body: bytes) -> tuple[int, bytes]:
    """The packet id and the return codes of a SUBACK."""
    (pid,) = struct.unpack_from("!H", body, 0)
    return int(pid), body[2:]


def with_topic(body: bytes, topic: str) -> bytes:
    """A PUBLISH body with its topic replaced (packet id and payload kept)."""
    _old, pos = read_string(body, 0)
    return string(topic) + body[pos:]
