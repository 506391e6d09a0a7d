"""``--broker embedded``: amqtt inside the hub process (the zero-install default).

Two TLS listeners with the hub CA's server certificate, as on mosquitto:

- ``port``: the same user names and passwords as on mosquitto (``{id}`` / ``{id}/secondary``,
  :func:`edgefleet.protocol.mqtt_password`), checked against the registry at connect;
- ``cert_port``: requires a client certificate signed by the hub CA (the TLS handshake checks the
  chain); the certificate's CN is the device id. At connect its serial is checked against the
  hub's CRL and the device against the registry (disabled and deleted devices are refused).

Whatever the client sends, the client id of a device connection is forced to its user name (the
CN on the certificate listener), like mosquitto's ``use_username_as_clientid``; a refused
connection gets a throw-away client id, so it cannot take over anybody's session. amqtt looks up
the session by client id before any auth plugin runs, so this happens in a
:class:`BrokerProtocolHandler` subclass right after the CONNECT packet is read. The topic plugin
confines each device to ``devices/{id}/...``.

With ``mqtt_ws_port`` a third TLS listener speaks MQTT over WebSockets (IoT Hub's SDKs with
``websockets=True`` connect to 443 of the host); its connections are admitted as on the default
listener.

The default listener also serves IoT Hub's device MQTT dialect (``iothub_dialect``): such a
connection is admitted as the device or module its SAS token or client certificate proves (its
client id is ``{device}`` or ``{device}/{module}``), and the protocol handler rewrites each of its
topics into that identity's own subtree and back. The embedded broker keeps sessions in memory only,
so it dies with the hub: use mosquitto where a hub crash must not lose in-flight messages.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import amqtt.broker
from amqtt.adapters import StreamWriterAdapter, WebSocketsReader, WebSocketsWriter
from amqtt.broker import Broker as AmqttBroker
from amqtt.contexts import Action, BaseContext
from amqtt.errors import ProtocolHandlerError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import INCOMING, IncomingApplicationMessage, OutgoingApplicationMessage, Session

from cloud_hub.broker import amqtt_strict
from cloud_hub.broker.admission import Admission
from cloud_hub.broker.base import own_broker_endpoint
from edgefleet import iothub_dialect as iothub
from edgefleet import protocol as p
from edgefleet.ca import HubCA

log = logging.getLogger(__name__)

# The hub process runs one embedded broker; its plugins find it here (amqtt builds plugins from
# class names, so there is no other way to hand them the registry).
_ACTIVE: EmbeddedBroker | None = None


def _password(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    return str(value or "")


class EdgefleetAuthPlugin(BaseAuthPlugin):
    @dataclass
    class Config:
        pass

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)

    async def authenticate(self, *, session: Session) -> bool | None:
        """The credentials were checked when the CONNECT was read (:func:`_admit`); an admitted
        session carries the broker's private admission token as its password."""
        broker = _ACTIVE
        if broker is None or not session.username:
            return False
        return hmac.compare_digest(_password(session.password), broker.admission_token)


class EdgefleetTopicPlugin(BaseTopicPlugin):
    @dataclass
    class Config:
        pass

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Any = None
    ) -> bool | None:
        if session is None or not topic or not session.username:
            return False
        return allowed(session.username, topic, action)


def allowed(username: str, topic: str, action: Any) -> bool:
    if username in (p.HUB_USERNAME, p.HUB_USERNAME + "/aux"):
        return True
    device_id, _slot = p.device_of_username(username)
    prefix = f"{p.ROOT}/{device_id}/"
    if action == Action.SUBSCRIBE:
        return topic.startswith(prefix) and "#" not in topic[: len(prefix)]
    return topic.startswith(prefix)


CERT_LISTENER = "certificate"
WS_LISTENER = "websockets"
REFUSED_PREFIX = "$refused/"


class _ListenerWriter(StreamWriterAdapter):
    """amqtt's stream writer, plus the name of the listener the connection came in on."""

    def __init__(self, writer: asyncio.StreamWriter, listener_name: str) -> None:
        super().__init__(writer)
        self.edgefleet_listener = listener_name


class _ListenerWebSocketWriter(WebSocketsWriter):
    """amqtt's WebSocket writer, plus the name of the listener the connection came in on."""

    def __init__(self, websocket: Any, listener_name: str) -> None:
        super().__init__(websocket)
        self.edgefleet_listener = listener_name


class _RoutedMessage(IncomingApplicationMessage):
    """An incoming QoS 1 message with the future the broker resolves once it has routed it, and
    the connection (protocol handler) it came in on."""

    __slots__ = ("routed", "connection")

    def __init__(self, message: IncomingApplicationMessage, connection: object) -> None:
        super().__init__(
            message.packet_id, message.topic, message.qos, message.data, message.retain
        )
        self.publish_packet = message.publish_packet  # type: ignore[misc]  # a base-class slot
        self.routed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.connection = connection


REFUSED_FILTER = "$refused"
"""What an IoT Hub-dialect filter with no rewrite becomes: the topic plugin refuses it (0x80)."""


def publish_violation(qos: int | None, topic: str | None) -> str | None:
    """Why a client's PUBLISH breaks MQTT 3.1.1 so that the server must close the connection
    (QoS 3, an empty topic, a wildcard or a NUL in the topic), or None."""
    if qos not in (0, 1, 2):
        return f"a PUBLISH with QoS {qos}"
    if not topic:
        return "a PUBLISH with an empty topic"
    if "+" in topic or "#" in topic or "\x00" in topic:
        return f"a PUBLISH to {topic!r} (wildcards and NUL are not allowed in a topic name)"
    return None


class _AdmittingHandler(BrokerProtocolHandler):
    """Decides who a connection is as soon as its CONNECT is read, before amqtt looks up (and
    possibly takes over) the session of the client id it claims.

    A connection in IoT Hub's dialect (``iothub`` set) has every topic rewritten between that
    dialect and its own subtree of the edgefleet contract (``iothub_dialect``); a publish with
    no rewrite closes the connection, a filter with no rewrite is refused (SUBACK 0x80).
    """

    iothub: iothub.IotHubIdentity | None = None
    expiry_timer: asyncio.TimerHandle | None = None

    @classmethod
    async def init_from_connect(
        cls,
        reader: Any,
        writer: Any,
        plugins_manager: Any,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> tuple[BrokerProtocolHandler, Session]:
        handler, session = await super().init_from_connect(reader, writer, plugins_manager, loop)
        listener = getattr(writer, "edgefleet_listener", None)
        broker = _ACTIVE
        if listener is not None and broker is not None:
            admitted = await broker.admit(session, listener)
            if admitted is not None:
                handler.iothub, expiry = admitted
                if expiry is not None:
                    handler.expiry_timer = asyncio.get_running_loop().call_later(
                        max(0.0, expiry - time.time()), _close_expired, handler
                    )
        return handler, session

    async def handle_publish(self, publish_packet: Any) -> None:
        violation = publish_violation(publish_packet.qos, publish_packet.topic_name)
        if violation is not None:
            log.info("dropping %s: %s", self.session.client_id if self.session else "?", violation)
            _close(self, grace=0.0)
            return
        ident = self.iothub
        if ident is not None:
            topic = publish_packet.topic_name or ""
            mapped = iothub.inbound_publish(ident, topic)
            if mapped is None:
                log.info("closing %s: it published to %r", ident.client_id, topic)
                _close(self)
                return
            publish_packet.variable_header.topic_name = mapped
        await super().handle_publish(publish_packet)

    async def _handle_qos1_message_flow(self, app_message: Any) -> None:
        """A device's QoS 1 PUBLISH is acknowledged once the broker has routed it (handed it to
        the subscribers' sessions, the hub's among them), not when it is merely queued on this
        connection: amqtt drops that queue when the connection ends, so a PUBACK given earlier
        could acknowledge a message nobody ever receives. Waiting here also slows the device's
        PUBACKs to the pace the broker routes at (the client's in-flight window is the bound).

        A QoS 1 PUBLISH to the client that its connection did not acknowledge (it closed, or
        no PUBACK came in time) stays in the session, to be sent again when the client resumes
        it [MQTT-4.4.0-1]; amqtt would discard it."""
        if self.session is None:
            await super()._handle_qos1_message_flow(app_message)
            return
        if app_message.direction != INCOMING:
            session = self.session
            try:
                await super()._handle_qos1_message_flow(app_message)
            except (TimeoutError, asyncio.CancelledError):
                if app_message.puback_packet is None and app_message.packet_id is not None:
                    session.inflight_out[app_message.packet_id] = app_message
                raise
            return
        message = _RoutedMessage(app_message, self)
        await self.session.delivered_message_queue.put(message)
        await message.routed  # cancelled with the connection: no PUBACK, the device resends
        puback = PubackPacket.build(message.packet_id)
        try:
            await self._send_packet(puback)
        except ProtocolHandlerError:  # the connection closed meanwhile: the device resends
            return
        app_message.puback_packet = message.puback_packet = puback

    async def handle_connect(self, connect: Any) -> None:
        log.info("dropping %s: a second CONNECT", self.session.client_id if self.session else "?")
        _close(self, grace=0.0)

    async def handle_connection_closed(self) -> None:
        await super().handle_connection_closed()
        # amqtt's stop after a broken packet can wait forever with the socket open
        asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, _abort, self.writer)

    async def handle_subscribe(self, subscribe: Any) -> None:
        if subscribe.payload is None or not subscribe.payload.topics:
            log.info(
                "dropping %s: a SUBSCRIBE without filters",
                self.session.client_id if self.session else "?",
            )
            _close(self, grace=0.0)
            return
        ident = self.iothub
        if ident is not None and subscribe.payload is not None:
            subscribe.payload.topics = [
                (iothub.inbound_filter(ident, topic) or REFUSED_FILTER, qos)
                for topic, qos in subscribe.payload.topics
            ]
        await super().handle_subscribe(subscribe)

    async def handle_unsubscribe(self, unsubscribe: Any) -> None:
        ident = self.iothub
        if ident is not None and unsubscribe.payload is not None:
            unsubscribe.payload.topics = [
                iothub.inbound_filter(ident, topic) or REFUSED_FILTER
                for topic in unsubscribe.payload.topics
            ]
        await super().handle_unsubscribe(unsubscribe)

    async def mqtt_publish(
        self,
        topic: str,
        data: bytes | bytearray,
        qos: int | None,
        retain: bool,
        ack_timeout: int | None = None,
    ) -> Any:
        ident = self.iothub
        if ident is not None:
            mapped = iothub.outbound_topic(ident, topic)
            if mapped is None:  # not for this identity: never delivered
                return OutgoingApplicationMessage(None, topic, 0, data, retain)
            topic = mapped
        return await super().mqtt_publish(topic, data, qos, retain, ack_timeout)


# amqtt's broker builds its protocol handlers through this module-level name; the subclass only
# acts on connections accepted by EdgefleetAmqttBroker (writers that carry a listener name).
amqtt.broker.BrokerProtocolHandler = _AdmittingHandler
amqtt_strict.install()


class SubscriptionTable(dict[str, list[tuple[Session, int]]]):
    """amqtt's table of topic filter -> subscribers, iterated over a snapshot of its filters.

    amqtt awaits inside its loops over the table (routing a message, replaying retained
    messages at connect); a filter subscribed or dropped meanwhile would end such a loop with a
    ``RuntimeError``, and the message would not reach the subscribers after that point.
    """

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().keys()))

    def items(self) -> list[tuple[str, list[tuple[Session, int]]]]:  # type: ignore[override]
        return list(super().items())


class EdgefleetAmqttBroker(AmqttBroker):
    """amqtt's broker with a client-certificate listener and listener-aware connections.

    ``cert_required_binds``: the bind addresses (``host:port``) of this broker's listeners that
    require a client certificate; every other listener takes one when offered.
    """

    def __init__(self, config: dict[str, Any], cert_required_binds: set[str]) -> None:
        self._cert_required_binds = frozenset(cert_required_binds)
        self._live: dict[str, tuple[Any, asyncio.Event]] = {}
        """Client id -> (protocol handler, set once closed) of its newest connection."""
        super().__init__(config)
        self._subscriptions: dict[str, list[tuple[Session, int]]] = SubscriptionTable()

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        from amqtt.adapters import StreamReaderAdapter

        try:
            await self._client_connected(
                listener_name, StreamReaderAdapter(reader), _ListenerWriter(writer, listener_name)
            )
        except (ConnectionError, ssl.SSLError) as exc:  # e.g. a refused client hung up first
            log.debug("connection on %s ended: %s", listener_name, exc)

    async def ws_connected(self, websocket: Any, listener_name: str) -> None:
        """MQTT over WebSockets (``--mqtt-ws-port``): admitted like the default listener."""
        try:
            await self._client_connected(
                listener_name,
                WebSocketsReader(websocket),
                _ListenerWebSocketWriter(websocket, listener_name),
            )
        except (ConnectionError, ssl.SSLError) as exc:
            log.debug("connection on %s ended: %s", listener_name, exc)

    async def _handle_client_session(
        self,
        reader: Any,
        writer: Any,
        client_session: Session,
        handler: Any,
        server: Any,
        listener_name: str,
    ) -> None:
        client_id = client_session.client_id or ""
        ident = getattr(handler, "iothub", None)
        presence = _presence_pair(ident, client_session.client_id)
        closed = asyncio.Event()
        previous = self._live.get(client_id)
        self._live[client_id] = (handler, closed)
        try:
            if previous is not None:
                await _close_superseded(*previous)
            if presence is not None:
                await self._announce(*presence[0])
            await super()._handle_client_session(
                reader, writer, client_session, handler, server, listener_name
            )
        finally:
            timer = getattr(handler, "expiry_timer", None)
            if timer is not None:
                timer.cancel()
            _unroute(client_session, handler)
            if presence is not None:
                await self._announce(*presence[1])
            # amqtt keeps the session of a refused connection; ours have throw-away ids
            if client_id.startswith(REFUSED_PREFIX):
                self._sessions.pop(client_id, None)
            if self._live.get(client_id, (None,))[0] is handler:
                del self._live[client_id]
            closed.set()

    async def _handle_message_delivery(
        self, client_session: Session, handler: Any, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        """Route a message, then release its PUBACK (see ``_handle_qos1_message_flow``)."""
        message = wait_deliver.result()
        try:
            delivered: bool = await super()._handle_message_delivery(
                client_session, handler, wait_deliver
            )
        except BaseException:
            if isinstance(message, _RoutedMessage):
                message.routed.cancel()
            raise
        if isinstance(message, _RoutedMessage) and not message.routed.done():
            if delivered:
                message.routed.set_result(None)
            else:  # amqtt closes the connection (invalid topic)
                message.routed.cancel()
        return delivered

    async def _announce(self, topic: str, payload: bytes) -> None:
        """Publish a retained presence message on behalf of an IoT Hub-dialect device (its SDK
        publishes none): the hub sees it connect and go as it sees its own devices."""
        await self.retain_message(None, topic, payload, 1)
        await self.internal_message_broadcast(topic, payload, 1)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        """Retained messages only for the client's own subscriptions: on every (re)connect amqtt
        replays the retained messages of every filter that any client subscribed to (the hub's
        ``devices/+/presence`` would hand each device everybody's presence)."""
        subscribers = self._subscriptions.get(subscription[0], [])
        if any(s.client_id == session.client_id for s, _qos in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)

    def _create_ssl_context(self, listener: Any) -> ssl.SSLContext:
        """Both listeners verify client certificates against the hub CA: the certificate
        listener requires one; the default listener takes one when offered (IoT Hub's X.509
        devices connect to 8883 like everybody else)."""
        context = AmqttBroker._create_ssl_context(listener)
        if listener.get("bind") in self._cert_required_binds:
            context.verify_mode = ssl.CERT_REQUIRED
        return context


def _unroute(session: Session, connection: object) -> None:
    """Forget the QoS 1 messages a closed connection left unrouted: none of them was
    acknowledged, so the device sends them again. Other messages stay queued (among them
    those of a connection that took the session over)."""
    queue = session.delivered_message_queue
    kept = []
    while not queue.empty():
        message = queue.get_nowait()
        if isinstance(message, _RoutedMessage) and message.connection is connection:
            message.routed.cancel()
        else:
            kept.append(message)
    for message in kept:
        queue.put_nowait(message)


def _presence_pair(
    ident: iothub.IotHubIdentity | None, client_id: str | None
) -> tuple[tuple[str, bytes], tuple[str, bytes]] | None:
    """(online, offline) presence of an IoT Hub-dialect device connection; both are made now,
    so the offline of a connection taken over is older than its successor's online."""
    if ident is None or ident.module_id is not None:
        return None
    conn = secrets.token_hex(8)
    topic = p.presence_topic(ident.device_id)
    return (
        (topic, p.presence_payload(p.ONLINE, client_id, conn)),
        (topic, p.presence_payload(p.OFFLINE, client_id, conn)),
    )


class EmbeddedBroker:
    def __init__(self, data_dir: Path, host: str, options: dict[str, Any]) -> None:
        self.registry = options["registry"]
        self.ca: HubCA = options["ca"]
        self.host = options.get("mqtt_host") or host
        self.endpoint = own_broker_endpoint("embedded", data_dir, self.host, options)
        self.upstream = self.endpoint
        self.ws_port = int(options.get("mqtt_ws_port") or 0)
        """MQTT over secure WebSockets (IoT Hub's SDKs with ``websockets=True``); 0: off."""
        self.admission = Admission(self.registry, self.ca, self.endpoint.service_password or "")
        self.admission_token = secrets.token_urlsafe(32)
        self._cert_serials: dict[str, int] = {}
        """Client id -> serial of the certificate its current connection presented."""
        self._broker: AmqttBroker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: asyncio.Queue[list[tuple[str, bytes]] | None] | None = None
        self._sender: asyncio.Task[None] | None = None

    def check_password(self, username: str, password: str) -> bool:
        return self.admission.check_password(username, password)

    def certificate_identity(self, der: bytes | None) -> tuple[str, int] | None:
        return self.admission.certificate_identity(der)

    def revoked_serials(self) -> set[int]:
        return self.admission.revoked_serials()

    async def admit(
        self, session: Session, listener: str
    ) -> tuple[iothub.IotHubIdentity, float | None] | None:
        """Check a new connection's credentials and fix its client id (see the module doc).

        An IoT Hub-dialect connection is admitted as its identity; the answer is that identity
        and the expiry of its SAS token (None for a certificate), None for any other."""
        password, session.password = _password(session.password), None
        username: str | None = None
        serial: int | None = None
        admitted: tuple[iothub.IotHubIdentity, float | None] | None = None
        if iothub.is_iothub_username(session.username):
            found_iothub = await asyncio.to_thread(
                self.check_iothub,
                session.username or "",
                session.client_id or "",
                password,
                session.ssl_object.getpeercert(True) if session.ssl_object else None,
            )
            if found_iothub is not None:
                admitted = found_iothub[0], found_iothub[1]
                username, serial = found_iothub[0].device_id, found_iothub[2]
        elif listener == CERT_LISTENER:
            der = session.ssl_object.getpeercert(True) if session.ssl_object else None
            found = await asyncio.to_thread(self.certificate_identity, der)
            if found is not None:
                username, serial = found
        elif session.username:
            claimed = session.username
            if await asyncio.to_thread(self.check_password, claimed, password):
                username = claimed
        if username is None:
            log.info("refusing a connection on the %s listener", listener)
            session.username = None
            session.client_id = REFUSED_PREFIX + secrets.token_hex(8)
            session.clean_session = True
            return None
        session.username = username
        session.password = self.admission_token
        if admitted is not None:
            session.client_id = admitted[0].client_id
        elif username not in (p.HUB_USERNAME, p.HUB_USERNAME + "/aux"):
            session.client_id = username
        if serial is None:
            self._cert_serials.pop(session.client_id or "", None)
        else:
            self._cert_serials[session.client_id or username] = serial
        return admitted

    def check_iothub(
        self, username: str, client_id: str, password: str, der: bytes | None
    ) -> tuple[iothub.IotHubIdentity, float | None, int | None] | None:
        return self.admission.check_iothub(username, client_id, password, der)

    async def start(self) -> None:
        global _ACTIVE
        self.ca.ensure([self.host, "localhost", "127.0.0.1"])
        _ACTIVE = self
        tls = {
            "type": "tcp",
            "ssl": True,
            "certfile": str(self.ca.server_cert_file),
            "keyfile": str(self.ca.server_key_file),
            "cafile": str(self.ca.ca_file),
        }
        cert_bind = f"{self.host}:{self.endpoint.cert_port}"
        listeners: dict[str, dict[str, Any]] = {
            "default": {**tls, "bind": f"{self.host}:{self.endpoint.port}"},
            CERT_LISTENER: {**tls, "bind": cert_bind},
        }
        if self.ws_port:
            listeners[WS_LISTENER] = {**tls, "type": "ws", "bind": f"{self.host}:{self.ws_port}"}
        config = {
            "listeners": listeners,
            "plugins": {
                f"{__name__}.EdgefleetAuthPlugin": {},
                f"{__name__}.EdgefleetTopicPlugin": {},
            },
        }
        self._broker = EdgefleetAmqttBroker(config, {cert_bind})
        await self._broker.start()
        self._outbox = asyncio.Queue()
        self._sender = asyncio.create_task(_send_loop(self._broker, self._outbox))
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        global _ACTIVE
        self._loop = None  # publish_direct answers False from here on
        if self._outbox is not None and self._sender is not None:
            self._outbox.put_nowait(None)  # send what is queued first
            try:
                await asyncio.wait_for(self._sender, 10)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("embedded broker: queued hub publishes not all sent")
            self._outbox = self._sender = None
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
        if _ACTIVE is self:
            _ACTIVE = None

    def sync(self) -> None:
        """Credentials are checked against the registry and the CRL at every connect; drop the
        connections of disabled or deleted devices and of revoked certificates."""
        broker = self._broker
        if broker is None:
            return
        revoked = self.revoked_serials()
        for session, handler in list(broker._sessions.values()):
            username = session.username or ""
            if not username or username.startswith(p.HUB_USERNAME):
                continue
            device_id, _slot = p.device_of_username(username)
            _dev, slash, module_id = (session.client_id or "").partition("/")
            ident = self.registry.identity(device_id, module_id if slash else None)
            if ident is None or not ident.enabled:
                log.info("closing the connection of disabled device %s", device_id)
                broker._loop.call_soon_threadsafe(_close, handler)
            elif self._cert_serials.get(session.client_id or "") in revoked:
                log.info("closing the connection of %s: its certificate is revoked", device_id)
                broker._loop.call_soon_threadsafe(_close, handler)

    def kick(self, device_id: str, client_id: str | None) -> None:
        self.sync()

    def module_connected(self, device_id: str, module_id: str) -> bool:
        """Whether a module is connected by itself (IoT Hub's module client; any thread)."""
        broker = self._broker
        found = broker._sessions.get(f"{device_id}/{module_id}") if broker else None
        return found is not None and found[0].transitions.is_connected()

    def publish_direct(self, messages: list[tuple[str, bytes]]) -> bool:
        """Queue the hub's own publishes for the broker, in order, without waiting.

        They get the same broadcast an MQTT PUBLISH from the service client gets (no retain; each
        subscriber's QoS; queued for offline persistent sessions), without TLS, packet coding and
        PUBACKs on both sides of a socket. Thread-safe; False when the broker is not running.
        """
        loop, outbox = self._loop, self._outbox
        if loop is None or outbox is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(outbox.put_nowait, messages)
        except RuntimeError:  # the loop closed meanwhile
            return False
        return True


async def _send_loop(
    broker: AmqttBroker, outbox: asyncio.Queue[list[tuple[str, bytes]] | None]
) -> None:
    """Broadcast queued hub publishes one at a time (order kept) until the None sentinel."""
    while (messages := await outbox.get()) is not None:
        for topic, payload in messages:
            try:
                await broker.internal_message_broadcast(topic, payload)
            except Exception:
                log.exception("embedded broker: broadcasting to %s failed", topic)


CLOSE_GRACE_SECONDS = 1.0


def _close(handler: Any, grace: float = CLOSE_GRACE_SECONDS) -> None:
    """Stop the connection; if amqtt's stop has not closed the socket after ``grace`` seconds
    (it can wait forever when the reader was cancelled mid-packet), drop the TCP connection."""
    asyncio.ensure_future(handler.stop())
    asyncio.get_running_loop().call_later(grace, _abort, handler.writer)


def _abort(writer: Any) -> None:
    stream = getattr(writer, "_writer", None)  # StreamWriterAdapter's asyncio.StreamWriter
    if stream is not None and not stream.transport.is_closing():
        log.info("dropping a connection that did not close")
        stream.transport.abort()


TAKEOVER_WAIT_SECONDS = 5.0


async def _close_superseded(handler: Any, closed: asyncio.Event) -> None:
    """End a connection whose client id a new connection claims, and wait until it has let go
    of the session.

    amqtt's own takeover stops the old connection but lets its message loop finish later: that
    loop then marks the shared session disconnected under the new connection, and everything
    published to the client from then on is queued as if it were offline. Closing the old
    connection first (as a dropped socket: its will is published) leaves amqtt nothing to take
    over. A connection that does not let go in time is left to amqtt's takeover.
    """
    session = getattr(handler, "session", None)
    log.info("closing the previous connection of %s", getattr(session, "client_id", "?"))
    await handler.handle_connection_closed()
    try:
        await asyncio.wait_for(closed.wait(), TAKEOVER_WAIT_SECONDS)
    except TimeoutError:
        log.warning("a superseded connection did not close in time; amqtt takes it over")


def _close_expired(handler: Any) -> None:
    ident = getattr(handler, "iothub", None)
    log.info("closing %s: its SAS token expired", ident.client_id if ident else "a connection")
    _close(handler)
