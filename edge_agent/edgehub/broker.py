"""The device's local MQTT broker: a small MQTT 3.1.1 server embedded in the edge hub.

Why not mosquitto: a module's QoS 1 publish must be acknowledged only once the edge hub has
committed the message to its store, and a separate broker acknowledges on receipt. Here the
PUBACK waits for the hub's future. It speaks what modules need (CONNECT with user name and
password, PUBLISH QoS 0/1, SUBSCRIBE/UNSUBSCRIBE, PING, persistent sessions kept in memory) and
enforces the hub's ACL on every publish and subscription. QoS 2 and retained messages are not
supported (a QoS 2 publish closes the connection).

A second, TLS listener (``start_iothub``) speaks IoT Hub's module MQTT dialect for IoT Hub's
SDKs: each such connection is bound at CONNECT to the module its SAS token proves, and every topic
is rewritten between the dialect and that module's own subtree (``edgefleet.iothub_dialect``);
a publish outside it closes the connection, a subscription outside it is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import ssl
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

from edge_agent.edgehub.coalescing_writer import CoalescingWriter
from edgefleet import iothub_dialect as iothub
from edgefleet import mqtt_packets as mp
from edgefleet.mqtt_packets import ProtocolViolation

log = logging.getLogger("edgefleet.edgehub.broker")

MAX_INFLIGHT = 1000
MAX_QUEUED = 100_000


class BrokerHooks(Protocol):
    def authenticate(self, client_id: str, username: str | None, password: bytes | None) -> bool:
        """True when the user name/password pair is valid (the user name is the identity)."""
        ...

    def authenticate_iothub(
        self, client_id: str, username: str | None, password: bytes | None
    ) -> tuple[str, iothub.IotHubIdentity, float] | None:
        """(module id, identity, token expiry) of an IoT Hub-dialect CONNECT it admits."""
        ...

    def authorize(self, username: str, topic: str, write: bool) -> bool: ...

    def on_publish(
        self, username: str, topic: str, payload: bytes, qos: int
    ) -> Awaitable[None] | None:
        """Handle a module's publish; the PUBACK waits for the returned awaitable (if any)."""
        ...

    def on_connection(self, username: str, connected: bool) -> None: ...

    def refusal_notice(
        self, username: str, topic: str, exc: BaseException
    ) -> tuple[str, bytes] | None:
        """(topic, body) telling the client why its publish to ``topic`` failed with ``exc``;
        None when there is nothing to tell."""
        ...

    def on_subscribed(self, username: str) -> None:
        """After a SUBACK: the module may now receive what waited for it."""
        ...


@dataclass
class Session:
    client_id: str
    username: str
    persistent: bool
    subscriptions: dict[str, int] = field(default_factory=dict)
    inflight: OrderedDict[int, tuple[str, bytes]] = field(default_factory=OrderedDict)
    queue: deque[tuple[str, bytes, int]] = field(default_factory=deque)
    writer: CoalescingWriter | None = None
    next_pid: int = 0
    dropped: int = 0
    keepalive: int = 0
    dialect: iothub.IotHubIdentity | None = None  # set: IoT Hub's dialect, topics rewritten

    def new_pid(self) -> int:
        for _ in range(65535):
            self.next_pid = self.next_pid % 65535 + 1
            if self.next_pid not in self.inflight:
                return self.next_pid
        raise ProtocolViolation("no free packet id")

    def wants(self, topic: str) -> int:
        best = -1
        for pattern, qos in self.subscriptions.items():
            if qos > best and mp.topic_matches(pattern, topic):
                best = qos
        return best


class LocalBroker:
    """Serve MQTT on ``host:port`` (port 0: pick a free one) in the running asyncio loop."""

    def __init__(self, hooks: BrokerHooks, host: str = "127.0.0.1", port: int = 0) -> None:
        self.hooks = hooks
        self.host = host
        self.port = port
        self.sessions: dict[str, Session] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self.iothub_port = 0
        self._tasks: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        self.port = await self.listen(self.host, self.port)

    async def start_iothub(self, host: str, port: int, context: ssl.SSLContext) -> int:
        """Serve IoT Hub's module dialect over TLS on ``host:port`` (0: a free port)."""
        self.iothub_port = await self.listen(host, port, context)
        return self.iothub_port

    async def listen(self, host: str, port: int, context: ssl.SSLContext | None = None) -> int:
        """Serve on ``host:port`` too (0: a free port): the native dialect, or with ``context``
        IoT Hub's module dialect over TLS. Returns the port."""
        if context is None:
            serve = self._serve
        else:
            serve = functools.partial(self._serve, iothub_dialect=True)
        server = await asyncio.start_server(
            serve,
            host,
            port,
            limit=mp.MAX_PACKET,
            ssl=context,
            ssl_handshake_timeout=10 if context is not None else None,
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for session in list(self.sessions.values()):
            if session.writer is not None:
                session.writer.close()
        for task in list(self._tasks):
            task.cancel()
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

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
        if session.dialect is not None:
            wire = iothub.outbound_topic(session.dialect, topic)
            if wire is None:  # not for this identity: never delivered
                return
            topic = wire
        pid = 0
        if qos:
            pid = session.new_pid()
            session.inflight[pid] = (topic, payload)
        session.writer.write(mp.publish_packet(topic, payload, qos, pid))

    def _drain_queue(self, session: Session) -> None:
        while session.queue and session.writer is not None and len(session.inflight) < MAX_INFLIGHT:
            topic, payload, qos = session.queue.popleft()
            self._send_now(session, topic, payload, qos)

    # --- connections ----------------------------------------------------------------------------

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        stream: asyncio.StreamWriter,
        iothub_dialect: bool = False,
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        session: Session | None = None
        expiry: asyncio.TimerHandle | None = None
        writer = CoalescingWriter(stream)
        packets = mp.PacketReader(reader)
        try:
            admitted = await self._connect(packets, writer, iothub_dialect)
            if admitted is not None:
                session, until = admitted
                if until is not None:  # a SAS connection ends with its token; the SDK renews
                    delay = max(0.0, until - time.time())
                    expiry = asyncio.get_running_loop().call_later(delay, writer.close)
                await self._loop(session, packets, writer)
        except (ProtocolViolation, asyncio.IncompleteReadError, ConnectionError, TimeoutError) as e:
            log.debug("connection closed: %s", e)
        except (struct.error, IndexError, ValueError) as e:  # malformed packet contents
            log.debug("malformed packet, connection closed: %s", e)
        except asyncio.CancelledError:
            pass
        finally:
            if expiry is not None:
                expiry.cancel()
            if task is not None:
                self._tasks.discard(task)
            if session is not None and session.writer is writer:
                session.writer = None
                if not session.persistent:
                    self.sessions.pop(session.client_id, None)
                with contextlib.suppress(Exception):
                    self.hooks.on_connection(session.username, self.connected(session.username))
            writer.close()

    async def _connect(
        self, packets: mp.PacketReader, writer: CoalescingWriter, iothub_dialect: bool
    ) -> tuple[Session, float | None] | None:
        ptype, _flags, body = await asyncio.wait_for(packets.next(), 10)
        if ptype != mp.CONNECT:
            raise ProtocolViolation("first packet is not CONNECT")
        request = mp.parse_connect(body)
        if request is None or request.level == 5:  # MQTT 3.1/3.1.1 only
            writer.write(mp.connack(False, mp.UNACCEPTABLE_PROTOCOL))
            return None
        client_id, username, clean = request.client_id, request.username, request.clean
        if not client_id:
            if not clean:
                writer.write(mp.connack(False, mp.IDENTIFIER_REJECTED))
                return None
            client_id = "anon-" + secrets.token_hex(6)
        dialect: iothub.IotHubIdentity | None = None
        until: float | None = None
        if iothub_dialect:
            admitted = self.hooks.authenticate_iothub(client_id, username, request.password)
            if admitted is not None:
                username, dialect, until = admitted
            ok = admitted is not None
        else:
            ok = username is not None and self.hooks.authenticate(
                client_id, username, request.password
            )
        if username is None or not ok:
            code = mp.NOT_AUTHORIZED if username is None else mp.BAD_USER_NAME_OR_PASSWORD
            writer.write(mp.connack(False, code))
            await writer.drain()
            return None
        old = self.sessions.get(client_id)
        if old is not None and old.writer is not None:
            old.writer.close()  # session takeover
            old.writer = None
        if old is not None and (clean or old.username != username or old.dialect != dialect):
            self.sessions.pop(client_id, None)
            old = None
        present = old is not None
        session = old or Session(client_id, username, persistent=not clean, dialect=dialect)
        session.persistent = not clean
        session.writer = writer
        self.sessions[client_id] = session
        writer.write(mp.connack(present, 0))
        for pid, (topic, payload) in list(session.inflight.items()):
            writer.write(mp.publish_packet(topic, payload, 1, pid, dup=True))
        self._drain_queue(session)
        session.keepalive = request.keepalive
        self.hooks.on_connection(username, True)
        return session, until

    async def _loop(
        self, session: Session, packets: mp.PacketReader, writer: CoalescingWriter
    ) -> None:
        watchdog = _KeepAlive(writer, session.keepalive * 1.5) if session.keepalive else None
        try:
            while True:
                batch = await packets.batch()
                if watchdog is not None:
                    watchdog.seen()
                for ptype, flags, body in batch:
                    if not self._handle(session, writer, ptype, flags, body):
                        return
                if writer.pending_bytes() > 1024 * 1024:
                    await writer.drain()
        finally:
            if watchdog is not None:
                watchdog.cancel()

    def _handle(
        self, session: Session, writer: CoalescingWriter, ptype: int, flags: int, body: bytes
    ) -> bool:
        """Act on one packet; False after DISCONNECT."""
        if ptype == mp.PUBLISH:
            self._on_publish(session, writer, mp.parse_publish(flags, body))
        elif ptype == mp.PUBACK:
            pid = mp.parse_puback(body)
            if pid is not None:
                session.inflight.pop(pid, None)
                if session.queue:
                    self._drain_queue(session)
        elif ptype == mp.SUBSCRIBE:
            self._on_subscribe(session, writer, *mp.parse_subscribe(body))
        elif ptype == mp.UNSUBSCRIBE:
            pid, filters = mp.parse_unsubscribe(body)
            for pattern in filters:
                internal = self._inbound_filter(session, pattern)
                if internal is not None:
                    session.subscriptions.pop(internal, None)
            writer.write(mp.unsuback(pid))
        elif ptype == mp.PINGREQ:
            writer.write(mp.PINGRESP_PACKET)
        elif ptype == mp.DISCONNECT:
            return False
        else:
            raise ProtocolViolation(f"unsupported packet type {ptype}")
        return True

    def _on_publish(self, session: Session, writer: CoalescingWriter, packet: mp.Publish) -> None:
        topic, qos = packet.topic, packet.qos
        if session.dialect is not None:
            mapped = iothub.inbound_publish(session.dialect, topic)
            if mapped is None:
                raise ProtocolViolation(f"{session.client_id} published outside its identity")
            topic = mapped
        if "+" in topic or "#" in topic or not self.hooks.authorize(session.username, topic, True):
            log.warning("denied publish by %s to %s", session.username, topic)
            if qos:
                writer.write(mp.puback(packet.pid))
            return
        pending = self.hooks.on_publish(session.username, topic, packet.payload, qos)
        if not qos:
            return
        ack = mp.puback(packet.pid)
        if pending is None:
            writer.write(ack)
            return
        future = asyncio.ensure_future(pending)  # a future stays itself: no task per message
        if future is not pending:
            self._tasks.add(future)
            future.add_done_callback(self._tasks.discard)
        future.add_done_callback(
            functools.partial(self._ack_when_done, session, writer, topic, ack)
        )

    def _ack_when_done(
        self,
        session: Session,
        writer: CoalescingWriter,
        topic: str,
        ack: bytes,
        done: asyncio.Future[None],
    ) -> None:
        """The PUBACK once the message is stored; a refusal notice first, or no PUBACK."""
        if done.cancelled():
            return
        exc = done.exception()
        if exc is None:
            if not writer.is_closing():
                writer.write(ack)
            return
        if not writer.is_closing() and self._tell_refusal(session, writer, topic, exc):
            writer.write(ack)  # the notice went first: the client knows it was not stored
            return
        log.warning("publish not accepted (%s); closing the connection without PUBACK", exc)
        writer.close()  # a plain MQTT 3.1.1 client resends after reconnecting

    def _tell_refusal(
        self, session: Session, writer: CoalescingWriter, topic: str, exc: BaseException
    ) -> bool:
        """Send the refusal notice, QoS 0, when the client subscribed to it."""
        notice = self.hooks.refusal_notice(session.username, topic, exc)
        if notice is None or session.wants(notice[0]) < 0:
            return False
        writer.write(mp.publish_packet(notice[0], notice[1], 0, 0))
        return True

    def _on_subscribe(
        self,
        session: Session,
        writer: CoalescingWriter,
        pid: int,
        filters: list[tuple[str, int]],
    ) -> None:
        codes = bytearray()
        granted: list[str] = []
        for requested, qos in filters:
            pattern = self._inbound_filter(session, requested)
            if pattern is not None and self.hooks.authorize(session.username, pattern, False):
                session.subscriptions[pattern] = qos
                codes.append(qos)
                granted.append(pattern)
            else:
                log.warning("denied subscription by %s to %s", session.username, requested)
                codes.append(mp.SUBSCRIPTION_REFUSED)
        writer.write(mp.suback(pid, bytes(codes)))
        if granted:
            self.hooks.on_subscribed(session.username)

    @staticmethod
    def _inbound_filter(session: Session, pattern: str) -> str | None:
        """The filter a subscription stands for in the hub's topics (None: refused)."""
        if session.dialect is None:
            return pattern
        return iothub.inbound_filter(session.dialect, pattern)


class _KeepAlive:
    """Closes a connection that sent nothing for ``limit`` seconds (1.5 keep-alive periods),
    checked by one timer instead of a timeout on every read."""

    def __init__(self, writer: CoalescingWriter, limit: float) -> None:
        self._writer = writer
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._timer = self._loop.call_later(limit, self._check)

    def seen(self) -> None:
        self._last = self._loop.time()

    def _check(self) -> None:
        idle = self._loop.time() - self._last
        if idle >= self._limit:
            log.debug("keep-alive expired, connection closed")
            self._writer.close()
            return
        self._timer = self._loop.call_later(self._limit - idle, self._check)

    def cancel(self) -> None:
        self._timer.cancel()
