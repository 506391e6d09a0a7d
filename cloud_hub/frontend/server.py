"""The hub's MQTT front end: the TLS listener on 8883 when the broker is mosquitto or external.

A connection's CONNECT is read here and admitted as the embedded broker admits it
(``cloud_hub.broker.admission``); its user name tells the dialect apart:

- edgefleet's own (``{id}``, ``{id}/secondary``, the service users; MQTT 3.1.1 or 5): the CONNECT
  and everything after it go to the broker's internal listener byte for byte, which checks the
  credentials once more and applies its ACL;
- IoT Hub's (``{host}/{clientId}/?api-version=...``, a SAS token or a client certificate): the
  front end connects to the broker as that identity (``login``) and relays packet by packet with
  every topic rewritten (``iothub_relay``), publishes the device's presence, and closes the
  connection when its SAS token expires or the identity is disabled or deleted (``sync``).

Anything else (no CONNECT first, malformed or oversized, refused credentials) closes that one
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from cloud_hub.broker.admission import SERVICE_USERS, Admission
from cloud_hub.broker.base import Endpoint
from cloud_hub.frontend import pipe
from cloud_hub.frontend.iothub_relay import IotHubRelay
from edgefleet import iothub_dialect as iothub
from edgefleet import mqtt_packets as mp
from edgefleet import protocol as p
from edgefleet.ca import HubCA

log = logging.getLogger(__name__)

CONNECT_LIMIT = 64 * 1024
"""Largest CONNECT read (user name, password, will): anything bigger closes the connection."""
CONNECT_TIMEOUT = 10.0
UPSTREAM_TRIES = 4
"""A broker that refuses a login the front end admitted may not have reloaded its password file
yet after a registry change: the front end tries again (0.5 s apart)."""

Login = Callable[[iothub.IotHubIdentity], tuple[str, str, str] | None]
"""(client id, user name, password) for the broker connection of an IoT Hub-dialect identity."""

_BAD_INPUT = (
    mp.ProtocolViolation,
    asyncio.IncompleteReadError,
    TimeoutError,
    OSError,  # the broker refuses or is gone: the device's connection closes, it retries
    ssl.SSLError,
    struct.error,
    IndexError,
    ValueError,
    UnicodeDecodeError,
)


@dataclass(frozen=True)
class Admitted:
    """Who a live connection is, for the registry checks of :meth:`FrontEnd.sync`."""

    device_id: str
    module_id: str | None
    serial: int | None
    iothub: bool


def refusal(level: int) -> bytes:
    """CONNACK "not authorized" in the client's protocol version."""
    if level == 5:
        return bytes([mp.CONNACK << 4, 3, 0, 0x87, 0])
    return mp.connack(False, mp.NOT_AUTHORIZED)


class FrontEnd:
    def __init__(
        self,
        admission: Admission,
        ca: HubCA,
        host: str,
        port: int,
        upstream: Endpoint,
        login: Login,
        reuse_port: bool = False,
    ) -> None:
        self.admission = admission
        self.ca = ca
        self.host, self.port = host, port
        self.upstream = upstream
        self.login = login
        self.reuse_port = reuse_port
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live: dict[asyncio.Task[None], Admitted] = {}
        self._lock = threading.Lock()
        self.announce: Callable[[str, bytes], None] | None = None
        """Publishes a retained message as the hub: a device's offline presence when its broker
        connection is already gone (the broker dropped it: disabled, deleted)."""

    # -- lifecycle ------------------------------------------------------------------------------

    def _server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.ca.server_cert_file), str(self.ca.server_key_file))
        context.load_verify_locations(str(self.ca.ca_file))
        context.verify_mode = ssl.CERT_OPTIONAL  # IoT Hub's X.509 devices present one on 8883
        return context

    def _upstream_context(self) -> ssl.SSLContext | None:
        if not self.upstream.tls:
            return None
        context = ssl.create_default_context()
        if self.upstream.ca_file is not None:
            context.load_verify_locations(str(self.upstream.ca_file))
        return context

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._serve,
            self.host,
            self.port,
            ssl=self._server_context(),
            ssl_handshake_timeout=CONNECT_TIMEOUT,
            reuse_port=self.reuse_port or None,
            limit=CONNECT_LIMIT,
        )
        log.info(
            "MQTT front end on %s:%d, relaying to %s:%d",
            self.host,
            self.port,
            self.upstream.host,
            self.upstream.port,
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        with self._lock:
            tasks = list(self._live)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)

    # -- registry changes (any thread) ----------------------------------------------------------

    def sync(self) -> None:
        """Close the connections of disabled or deleted identities and revoked certificates."""
        loop = self._loop
        with self._lock:
            live = list(self._live.items())
        refused = self.admission.refused_among(
            (who.device_id, who.module_id, who.serial) for _task, who in live
        )
        for task, who in live:
            if (who.device_id, who.module_id, who.serial) in refused:
                log.info("closing the connection of %s: no longer admitted", who.device_id)
                if loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(task.cancel)

    def module_connected(self, device_id: str, module_id: str) -> bool:
        """Whether a module is connected by itself in IoT Hub's dialect (any thread)."""
        with self._lock:
            return any(
                w.iothub and w.device_id == device_id and w.module_id == module_id
                for w in self._live.values()
            )

    # -- connections ----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._connection(reader, writer)
        except _BAD_INPUT as exc:
            log.debug("front end: connection closed: %r", exc)
        except asyncio.CancelledError:
            pass
        finally:
            await pipe.close(writer)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ptype, flags, body = await asyncio.wait_for(
            mp.read_packet(reader, CONNECT_LIMIT, expect=mp.CONNECT), CONNECT_TIMEOUT
        )
        if ptype != mp.CONNECT:
            raise mp.ProtocolViolation("the first packet is not a CONNECT")
        connect = mp.parse_connect(body)
        if connect is None:
            writer.write(mp.connack(False, mp.UNACCEPTABLE_PROTOCOL))
            return
        password = (connect.password or b"").decode(errors="replace")
        if iothub.is_iothub_username(connect.username) and connect.level == 4:
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(True) if ssl_object is not None else None
            found = await asyncio.to_thread(
                self.admission.check_iothub,
                connect.username or "",
                connect.client_id,
                password,
                der,
            )
            if found is None:
                writer.write(refusal(connect.level))
                return
            ident, expiry, serial = found
            who = Admitted(ident.device_id, ident.module_id, serial, True)
            await self._tracked(who, self._iothub(ident, connect, expiry, reader, writer))
            return
        username = connect.username or ""
        if not username or not await asyncio.to_thread(
            self.admission.check_password, username, password
        ):
            log.info("front end: refusing a connection (user name %r)", username[:64])
            writer.write(refusal(connect.level))
            return
        first = mp.packet((mp.CONNECT << 4) | flags, body)
        if username in SERVICE_USERS:
            await self._relay_bytes(first, reader, writer)
            return
        device_id, _slot = p.device_of_username(username)
        who = Admitted(device_id, None, None, False)
        await self._tracked(who, self._relay_bytes(first, reader, writer))

    async def _tracked(self, who: Admitted, flow: Coroutine[Any, Any, None]) -> None:
        """Run a connection's relay as a task that :meth:`sync` and :meth:`stop` can cancel."""
        task = asyncio.create_task(flow)
        with self._lock:
            self._live[task] = who
        try:
            await task
        finally:
            with self._lock:
                self._live.pop(task, None)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            self.upstream.host,
            self.upstream.port,
            ssl=self._upstream_context(),
            limit=2 * 1024 * 1024,
        )

    async def _relay_bytes(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """edgefleet's dialect: the broker sees the device's own bytes, CONNECT included."""
        up_reader, up_writer = await self._open_upstream()
        try:
            up_writer.write(first)
            await pipe.first_to_end(pipe.copy(reader, up_writer), pipe.copy(up_reader, writer))
        finally:
            await pipe.close(up_writer)

    async def _iothub(
        self,
        ident: iothub.IotHubIdentity,
        connect: mp.Connect,
        expiry: float | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        login = self.login(ident)
        if login is None:
            log.info("front end: no broker login for %s", ident.client_id)
            writer.write(refusal(connect.level))
            return
        conn = secrets.token_hex(8)
        presence = None if ident.module_id is not None else p.presence_topic(ident.device_id)
        will = None
        if presence is not None:
            will = (presence, p.presence_payload(p.OFFLINE, ident.client_id, conn))
        client_id, username, password = login
        hello = mp.connect_packet(
            client_id, username, password, connect.clean, connect.keepalive, will
        )
        upstream = await self._login_upstream(hello, ident)
        if upstream is None:
            writer.write(refusal(connect.level))
            return
        (up_reader, up_writer), connack = upstream
        timer = None
        if expiry is not None:
            task = asyncio.current_task()
            assert task is not None
            timer = asyncio.get_running_loop().call_later(
                max(0.0, expiry - time.time()), _expired, ident, task
            )
        relay = IotHubRelay(ident, (reader, writer), (up_reader, up_writer))
        try:
            writer.write(connack)
            if presence is not None:
                online = p.presence_payload(p.ONLINE, ident.client_id, conn)
                up_writer.write(mp.publish_packet(presence, online, 0, retain=True))
            await pipe.first_to_end(relay.from_device(), relay.from_broker())
        finally:
            if timer is not None:
                timer.cancel()
            if presence is not None and will is not None:
                self._offline(presence, will[1], up_writer)
            await pipe.close(up_writer)

    def _offline(self, topic: str, payload: bytes, up_writer: asyncio.StreamWriter) -> None:
        """A clean end's offline presence, in place of the will: on the device's broker
        connection while it lives, and as the hub (the broker may have dropped the device)."""
        if not up_writer.is_closing():
            with contextlib.suppress(Exception):
                up_writer.write(mp.publish_packet(topic, payload, 0, retain=True))
                up_writer.write(bytes([mp.DISCONNECT << 4, 0]))
        if self.announce is not None:
            with contextlib.suppress(Exception):
                self.announce(topic, payload)

    async def _login_upstream(
        self, hello: bytes, ident: iothub.IotHubIdentity
    ) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], bytes] | None:
        """The broker connection of an identity and its CONNACK (for the device), or None when
        the broker keeps refusing it."""
        for attempt in range(UPSTREAM_TRIES):
            if attempt:
                await asyncio.sleep(0.5)
            up_reader, up_writer = await self._open_upstream()
            up_writer.write(hello)
            try:
                ptype, flags, body = await asyncio.wait_for(
                    mp.read_packet(up_reader), CONNECT_TIMEOUT
                )
            except BaseException:
                await pipe.close(up_writer)
                raise
            if ptype == mp.CONNACK and len(body) == 2 and body[1] == 0:
                return (up_reader, up_writer), mp.packet((ptype << 4) | flags, body)
            await pipe.close(up_writer)
            log.info("front end: the broker refused %s (CONNACK %s)", ident.client_id, body.hex())
        return None


def _expired(ident: iothub.IotHubIdentity, task: asyncio.Task[None]) -> None:
    log.info("closing %s: its SAS token expired", ident.client_id)
    task.cancel()
