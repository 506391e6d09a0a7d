"""``--broker embedded``: amqtt inside the hub process (the zero-install default).

TLS with the hub CA's server certificate; devices authenticate with the same user names and
passwords as on mosquitto (``{id}`` / ``{id}/secondary``, :func:`edgefleet.protocol.mqtt_password`),
checked against the registry at connect; the topic plugin confines each device to
``devices/{id}/...``. The embedded broker keeps sessions in memory only, so it dies with the hub:
use mosquitto where a hub crash must not lose in-flight messages. No X.509 client certificates.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.broker import Broker as AmqttBroker
from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from cloud_hub.broker.base import Endpoint, persisted_ports, service_secret
from cloud_hub.ca import HubCA
from edgefleet import protocol as p

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
        broker = _ACTIVE
        if broker is None or not session.username:
            return False
        return await asyncio.to_thread(
            broker.check_password, session.username, _password(session.password)
        )


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


class EmbeddedBroker:
    def __init__(self, data_dir: Path, host: str, options: dict[str, Any]) -> None:
        self.registry = options["registry"]
        self.ca: HubCA = options["ca"]
        self.host = options.get("mqtt_host") or host
        port = persisted_ports(
            data_dir / "broker", self.host, {"port": int(options.get("mqtt_port") or 0)}
        )["port"]
        self._service_password = service_secret(data_dir)
        self.endpoint = Endpoint(
            kind="embedded",
            host=self.host,
            port=port,
            tls=True,
            ca_file=self.ca.ca_file,
            service_username=p.HUB_USERNAME,
            service_password=self._service_password,
        )
        self._broker: AmqttBroker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: asyncio.Queue[list[tuple[str, bytes]] | None] | None = None
        self._sender: asyncio.Task[None] | None = None

    def check_password(self, username: str, password: str) -> bool:
        if username in (p.HUB_USERNAME, p.HUB_USERNAME + "/aux"):
            return hmac.compare_digest(password, self._service_password)
        device_id, slot = p.device_of_username(username)
        try:
            ident = self.registry.identity(device_id)
        except Exception:  # noqa: BLE001 - invalid id
            return False
        if ident is None or not ident.enabled:
            return False
        key = ident.primary_key if slot == "primary" else ident.secondary_key
        if not key:
            return False
        return hmac.compare_digest(password, p.mqtt_password(device_id, key))

    async def start(self) -> None:
        global _ACTIVE
        self.ca.ensure([self.host, "localhost", "127.0.0.1"])
        _ACTIVE = self
        config = {
            "listeners": {
                "default": {
                    "type": "tcp",
                    "bind": f"{self.host}:{self.endpoint.port}",
                    "ssl": True,
                    "certfile": str(self.ca.server_cert_file),
                    "keyfile": str(self.ca.server_key_file),
                }
            },
            "plugins": {
                f"{__name__}.EdgefleetAuthPlugin": {},
                f"{__name__}.EdgefleetTopicPlugin": {},
            },
        }
        self._broker = AmqttBroker(config)
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
        """Credentials are checked against the registry at every connect; drop disabled ones."""
        broker = self._broker
        if broker is None:
            return
        for session, handler in list(broker._sessions.values()):
            username = session.username or ""
            if username.startswith(p.HUB_USERNAME):
                continue
            device_id, _slot = p.device_of_username(username)
            ident = self.registry.identity(device_id)
            if ident is None or not ident.enabled:
                log.info("closing the connection of disabled device %s", device_id)
                broker._loop.call_soon_threadsafe(_close, handler)

    def kick(self, device_id: str, client_id: str | None) -> None:
        self.sync()

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


def _close(handler: Any) -> None:
    asyncio.ensure_future(handler.stop())
