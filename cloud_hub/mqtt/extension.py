"""The MQTT side of a hub process: its CA, its broker and the service client, started and
stopped with the hub (``install``, listed in ``cloud_hub.app.EXTENSIONS``). The REST routes that
use them are in ``cloud_hub.api.messaging``.

Settings (``hub serve`` options, kept in ``HubSettings.model_extra``): ``broker`` (``embedded``,
``mosquitto`` or ``mqtt(s)://host:port``), ``mqtt_port`` (0 = a free port, kept across restarts),
``cert_port`` (the broker's X.509 listener), ``mqtt_ws_port`` (MQTT over secure WebSockets,
embedded broker only; 0: off), ``mqtt_host``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import threading
from typing import Any

from fastapi import FastAPI

from cloud_hub import events
from cloud_hub.broker.admission import Admission
from cloud_hub.broker.base import Broker, open_broker, persisted_ports
from cloud_hub.frontend.logins import broker_login
from cloud_hub.frontend.server import FrontEnd
from cloud_hub.hub import BackgroundService, Hub
from cloud_hub.mqtt.service_client import ServiceClient
from edgefleet.ca import HubCA

log = logging.getLogger(__name__)


class Messaging:
    """The broker, the service client and the CA of one hub process."""

    def __init__(self, hub: Hub) -> None:
        extra = hub.settings.model_extra or {}
        self.hub = hub
        self.ca = HubCA((hub.settings.data_dir / "ca").resolve())
        host = str(extra.get("mqtt_host") or hub.settings.host)
        self.advertised_host = advertised_host(hub.settings.public_host_name, host)
        names = [self.advertised_host, host, "localhost", "127.0.0.1"]
        self.ca.ensure(list(dict.fromkeys(n for n in names if n not in ("0.0.0.0", "::"))))
        options: dict[str, Any] = {
            "registry": hub.registry,
            "ca": self.ca,
            "mqtt_port": int(extra.get("mqtt_port") or 0),
            "cert_port": int(extra.get("cert_port") or 0),
            "mqtt_ws_port": int(extra.get("mqtt_ws_port") or 0),
            "mqtt_host": extra.get("mqtt_host"),
        }
        self.broker: Broker = open_broker(
            str(extra.get("broker") or "embedded"),
            hub.settings.data_dir,
            hub.settings.host,
            options,
        )
        instance = extra.get("instance") or None
        if instance and self.broker.endpoint.kind != "external":
            raise ValueError(
                "--instance needs --broker mqtt://... or mqtts://...: a broker every hub "
                "process shares"
            )
        self.frontend = None if self.broker.endpoint.kind == "embedded" else self._frontend(hub)
        self.service = ServiceClient(
            hub,
            self.broker.upstream,
            instance=instance,
            direct_publish=getattr(self.broker, "publish_direct", None),
            module_connected=getattr(self.broker, "module_connected", None)
            or (self.frontend.module_connected if self.frontend is not None else None),
        )
        if self.frontend is not None:
            self.frontend.announce = self.service.announce
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._sync_thread: threading.Thread | None = None
        self._unsubscribe = hub.events.subscribe(
            (events.DeviceCreated, events.DeviceUpdated, events.DeviceDeleted),
            lambda _e: self._dirty.set(),
        )

    def _frontend(self, hub: Hub) -> FrontEnd:
        """The front end on 8883 of ``--host`` (mosquitto: the broker's public port; external:
        ``--mqtt-port``) for a broker that is not the embedded one."""
        extra = hub.settings.model_extra or {}
        host = str(extra.get("mqtt_host") or hub.settings.host)
        port = self.broker.endpoint.port
        if self.broker.endpoint.kind == "external":
            wanted = {"port": int(extra.get("mqtt_port") or 0)}
            port = persisted_ports(hub.settings.data_dir / "frontend", host, wanted)["port"]
        # the service users pass only with the password the hub itself uses at the broker
        secret = self.broker.upstream.service_password or secrets.token_urlsafe(32)
        admission = Admission(hub.registry, self.ca, secret)
        return FrontEnd(
            admission,
            self.ca,
            host,
            port,
            self.broker.upstream,
            broker_login(self.broker, hub.registry),
            reuse_port=bool(extra.get("instance")),
        )

    async def start(self) -> None:
        if self.broker.endpoint.kind != "embedded" and (self.hub.settings.model_extra or {}).get(
            "mqtt_ws_port"
        ):
            log.warning(
                "--mqtt-ws-port is served by the embedded broker only; the %s broker has no "
                "WebSocket listener of ours",
                self.broker.endpoint.kind,
            )
        await self.broker.start()
        if self.frontend is not None:
            try:
                await self.frontend.start()
            except OSError as exc:
                if self.broker.endpoint.kind != "external":
                    raise
                log.warning(
                    "the MQTT front end cannot listen on %s:%d (%s); devices reach only the "
                    "external broker itself",
                    self.frontend.host,
                    self.frontend.port,
                    exc,
                )
                self.frontend = None
        await asyncio.to_thread(self.service.start)
        self._sync_thread = threading.Thread(
            target=self._sync_loop, name="broker-sync", daemon=True
        )
        self._sync_thread.start()

    async def stop(self) -> None:
        self._unsubscribe()
        self._stop.set()
        await asyncio.to_thread(self.service.stop)
        if self.frontend is not None:
            await self.frontend.stop()
        await self.broker.stop()

    def _sync_loop(self) -> None:
        """Bring the broker's users, ACL and CRL up to date after registry changes."""
        while not self._stop.is_set():
            if not self._dirty.wait(0.5):
                continue
            self._stop.wait(0.05)  # coalesce bursts of registry changes
            self._dirty.clear()
            try:
                self.broker.sync()
                if self.frontend is not None:
                    self.frontend.sync()
            except Exception:  # noqa: BLE001 - retried on the next change
                log.exception("broker sync failed")


def advertised_host(public_host_name: str | None, host: str) -> str:
    """The host name devices should use: the public host name's host, else the bind address
    (the machine's name when bound to every interface)."""
    if public_host_name:
        name, sep, port = public_host_name.rpartition(":")
        return name if sep and port.isdigit() and ":" not in name else public_host_name
    if host in ("0.0.0.0", "::", ""):
        return socket.getfqdn()
    return host


def install(app: FastAPI, hub: Hub) -> None:
    messaging = Messaging(hub)
    app.state.messaging = messaging
    hub.add_background(BackgroundService("messaging", messaging.start, messaging.stop))
