"""The device's local MQTT broker: a small MQTT 3.1.1 server embedded in the edge hub.

Why not mosquitto: a module's QoS 1 publish must be acknowledged only once the edge hub has
committed the message to its store, and a separate broker acknowledges on receipt. Here the
PUBACK waits for the hub's future. It speaks what modules need (CONNECT with user name and
password, PUBLISH QoS 0/1, SUBSCRIBE/UNSUBSCRIBE, PING, persistent sessions kept in memory) and
enforces the hub's ACL on every publish and subscription. QoS 2 and retained messages are not
supported (a QoS 2 publish closes the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import struct
from collections import OrderedDict, deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("edgefleet.edgehub.broker")

MAX_PACKET = 512 * 1024
MAX_INFLIGHT = 1000
MAX_QUEUED = 100_000

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14


class BrokerHooks(Protocol):
    def authenticate(self, client_id: str, username: str | None, password: bytes | None) -> bool:
        """True when the user name/password pair is valid (the user name is the identity)."""
        ...

    def authorize(self, username: str, topic: str, write: bool) -> bool: ...

    def on_publish(
        self, username: str, topic: str, payload: bytes, qos: int
    ) -> Awaitable[None] | None:
        """Handle a module's publish; the PUBACK waits for the returned awaitable (if any)."""
        ...

    def on_connection(self, username: str, connected: bool) -> None: ...

    def on_subscribed(self, username: str) -> None:
        """After a SUBACK: the module may now receive what waited for it."""
        ...


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


def _enc_len(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def _str(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(data):
        raise ProtocolViolation("truncated string")
    (n,) = struct.unpack_from("!H", data, pos)
    end = pos + 2 + n
    if end > len(data):
        raise ProtocolViolation("truncated string")
    return data[pos + 2 : end], end


def publish_packet(topic: str, payload: bytes, qos: int, pid: int = 0, dup: bool = False) -> bytes:
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t + (struct.pack("!H", pid) if qos else b"") + payload
    flags = (0x08 if dup else 0) | (qos << 1)
    return bytes([(PUBLISH << 4) | flags]) + _enc_len(len(body)) + body


@dataclass
class Session:
    client_id: str
    username: str
    persistent: bool
    subscriptions: dict[str, int] = field(default_factory=dict)
    inflight: OrderedDict[int, tuple[str, bytes]] = field(default_factory=OrderedDict)
    queue: deque[tuple[str, bytes, int]] = field(default_factory=deque)
    writer: asyncio.StreamWriter | None = None
    next_pid: int = 0
    dropped: int = 0
    keepalive: int = 0

    def new_pid(self) -> int:
        for _ in range(65535):
            self.next_pid = self.next_pid % 65535 + 1
            if self.next_pid not in self.inflight:
                return self.next_pid
        raise ProtocolViolation("no free packet id")

    def wants(self, topic: str) -> int:
        best = -1
        for pattern, qos in self.subscriptions.items():
            if qos > best and topic_matches(pattern, topic):
                best = qos
        return best


class LocalBroker:
    """Serve MQTT on ``host:port`` (port 0: pick a free one) in the running asyncio loop."""

    def __init__(self, hooks: BrokerHooks, host: str = "127.0.0.1", port: int = 0) -> None:
        self.hooks = hooks
        self.host = host
        self.port = port
        self.sessions: dict[str, Session] = {}
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_PACKET
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions.values()):
            if session.writer is not None:
                session.writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def connected(self, username: str) -> bool:
        sessions = list(self.sessions.values())  # may run outside the loop thread
        return any(s.username == username and s.writer for s in sessions)

    # --- delivery (call in the loop thread) ---------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Deliver to every matching subscription; returns how many sessions got it."""
        count = 0
        for session in self.sessions.values():
            want = session.wants(topic)
            if want < 0:
                continue
            count += 1
            self._deliver(session, topic, payload, min(qos, want))
        return count

    def _deliver(self, session: Session, topic: str, payload: bytes, qos: int) -> None:
        if session.writer is None or len(session.inflight) >= MAX_INFLIGHT:
            if qos == 0 and session.writer is None:
                return
            if len(session.queue) >= MAX_QUEUED:
                session.queue.popleft()
                session.dropped += 1
            session.queue.append((topic, payload, qos))
            return
        self._send_now(session, topic, payload, qos)

    def _send_now(self, session: Session, topic: str, payload: bytes, qos: int) -> None:
        assert session.writer is not None
        pid = 0
        if qos:
            pid = session.new_pid()
            session.inflight[pid] = (topic, payload)
        session.writer.write(publish_packet(topic, payload, qos, pid))

    def _drain_queue(self, session: Session) -> None:
        while session.queue and session.writer is not None and len(session.inflight) < MAX_INFLIGHT:
            topic, payload, qos = session.queue.popleft()
            self._send_now(session, topic, payload, qos)

    # --- connections ----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        session: Session | None = None
        try:
            session = await self._connect(reader, writer)
            if session is not None:
                await self._loop(session, reader, writer)
        except (ProtocolViolation, asyncio.IncompleteReadError, ConnectionError, TimeoutError) as e:
            log.debug("connection closed: %s", e)
        except (struct.error, IndexError, ValueError) as e:  # malformed packet contents
            log.debug("malformed packet, connection closed: %s", e)
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            if session is not None and session.writer is writer:
                session.writer = None
                if not session.persistent:
                    self.sessions.pop(session.client_id, None)
                with contextlib.suppress(Exception):
                    self.hooks.on_connection(session.username, self.connected(session.username))
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
        head = await reader.readexactly(1)
        length, mult = 0, 1
        for _ in range(4):
            (b,) = await reader.readexactly(1)
            length += (b & 0x7F) * mult
            if not b & 0x80:
                break
            mult *= 128
        else:
            raise ProtocolViolation("bad remaining length")
        if length > MAX_PACKET:
            raise ProtocolViolation("packet too large")
        body = await reader.readexactly(length) if length else b""
        return head[0] >> 4, head[0] & 0x0F, body

    async def _connect(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Session | None:
        ptype, _flags, body = await asyncio.wait_for(self._read(reader), 10)
        if ptype != CONNECT:
            raise ProtocolViolation("first packet is not CONNECT")
        name, pos = _str(body, 0)
        if name not in (b"MQTT", b"MQIsdp") or pos + 4 > len(body):
            writer.write(bytes([CONNACK << 4, 2, 0, 1]))
            return None
        cflags = body[pos + 1]
        (keepalive,) = struct.unpack_from("!H", body, pos + 2)
        pos += 4
        cid_raw, pos = _str(body, pos)
        client_id = cid_raw.decode(errors="replace")
        if cflags & 0x04:
            _, pos = _str(body, pos)
            _, pos = _str(body, pos)
        username = password = None
        if cflags & 0x80:
            raw_user, pos = _str(body, pos)
            username = raw_user.decode(errors="replace")
        if cflags & 0x40:
            password, pos = _str(body, pos)
        clean = bool(cflags & 0x02)
        if not client_id:
            if not clean:
                writer.write(bytes([CONNACK << 4, 2, 0, 2]))
                return None
            client_id = "anon-" + secrets.token_hex(6)
        if username is None or not self.hooks.authenticate(client_id, username, password):
            writer.write(bytes([CONNACK << 4, 2, 0, 5 if username is None else 4]))
            await writer.drain()
            return None
        old = self.sessions.get(client_id)
        if old is not None and old.writer is not None:
            old.writer.close()  # session takeover
            old.writer = None
        if old is not None and (clean or old.username != username):
            self.sessions.pop(client_id, None)
            old = None
        present = old is not None
        session = old or Session(client_id, username, persistent=not clean)
        session.persistent = not clean
        session.writer = writer
        self.sessions[client_id] = session
        writer.write(bytes([CONNACK << 4, 2, 1 if present else 0, 0]))
        for pid, (topic, payload) in list(session.inflight.items()):
            writer.write(publish_packet(topic, payload, 1, pid, dup=True))
        self._drain_queue(session)
        session.keepalive = keepalive
        self.hooks.on_connection(username, True)
        return session

    async def _loop(
        self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        timeout = session.keepalive * 1.5 if session.keepalive else None
        while True:
            ptype, flags, body = await asyncio.wait_for(self._read(reader), timeout)
            if ptype == PUBLISH:
                await self._on_publish(session, writer, flags, body)
            elif ptype == PUBACK:
                if len(body) >= 2:
                    (pid,) = struct.unpack_from("!H", body, 0)
                    session.inflight.pop(pid, None)
                    if session.queue:
                        self._drain_queue(session)
            elif ptype == SUBSCRIBE:
                self._on_subscribe(session, writer, body)
            elif ptype == UNSUBSCRIBE:
                (pid,) = struct.unpack_from("!H", body, 0)
                pos = 2
                while pos < len(body):
                    raw, pos = _str(body, pos)
                    session.subscriptions.pop(raw.decode(errors="replace"), None)
                writer.write(bytes([UNSUBACK << 4, 2]) + struct.pack("!H", pid))
            elif ptype == PINGREQ:
                writer.write(bytes([PINGRESP << 4, 0]))
            elif ptype == DISCONNECT:
                return
            else:
                raise ProtocolViolation(f"unsupported packet type {ptype}")
            if writer.transport.get_write_buffer_size() > 1024 * 1024:
                await writer.drain()

    async def _on_publish(
        self, session: Session, writer: asyncio.StreamWriter, flags: int, body: bytes
    ) -> None:
        qos = (flags >> 1) & 0x03
        if qos > 1:
            raise ProtocolViolation("QoS 2 is not supported by the edge hub")
        raw_topic, pos = _str(body, 0)
        pid = 0
        if qos:
            (pid,) = struct.unpack_from("!H", body, pos)
            pos += 2
        topic = raw_topic.decode(errors="replace")
        payload = body[pos:]
        if "+" in topic or "#" in topic or not self.hooks.authorize(session.username, topic, True):
            log.warning("denied publish by %s to %s", session.username, topic)
            if qos:
                writer.write(bytes([PUBACK << 4, 2]) + struct.pack("!H", pid))
            return
        pending = self.hooks.on_publish(session.username, topic, payload, qos)
        if not qos:
            return
        ack = bytes([PUBACK << 4, 2]) + struct.pack("!H", pid)
        if pending is None:
            writer.write(ack)
            return
        task = asyncio.ensure_future(self._ack_when_done(pending, writer, ack))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ack_when_done(
        self, pending: Awaitable[None], writer: asyncio.StreamWriter, ack: bytes
    ) -> None:
        try:
            await pending
        except Exception:  # noqa: BLE001 - not durable: no ack, the client will resend
            log.exception("publish not accepted; closing the connection without PUBACK")
            writer.close()
            return
        if not writer.is_closing():
            writer.write(ack)

    def _on_subscribe(self, session: Session, writer: asyncio.StreamWriter, body: bytes) -> None:
        (pid,) = struct.unpack_from("!H", body, 0)
        pos = 2
        codes = bytearray()
        granted: list[str] = []
        while pos < len(body):
            raw, pos = _str(body, pos)
            if pos >= len(body):
                raise ProtocolViolation("SUBSCRIBE without QoS")
            qos = min(body[pos], 1)
            pos += 1
            pattern = raw.decode(errors="replace")
            if self.hooks.authorize(session.username, pattern, False):
                session.subscriptions[pattern] = qos
                codes.append(qos)
                granted.append(pattern)
            else:
                log.warning("denied subscription by %s to %s", session.username, pattern)
                codes.append(0x80)
        writer.write(
            bytes([SUBACK << 4]) + _enc_len(2 + len(codes)) + struct.pack("!H", pid) + codes
        )
        if granted:
            self.hooks.on_subscribed(session.username)
