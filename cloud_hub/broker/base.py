"""What the hub's MQTT side needs from a broker, whichever kind it is."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from edgefleet import protocol as p


@dataclass(frozen=True)
class Endpoint:
    """Where devices and the hub's service client connect."""

    kind: str
    host: str
    port: int
    tls: bool
    ca_file: Path | None
    service_username: str | None
    service_password: str | None
    cert_port: int | None = None
    """The X.509 (client certificate) listener, when the broker has one."""


class Broker(Protocol):
    endpoint: Endpoint
    """Where devices connect (with the hub's MQTT front end: the front end's listener)."""
    upstream: Endpoint
    """Where the hub itself connects: its service client, and the front end's relayed
    connections (mosquitto: an internal loopback listener; otherwise ``endpoint``)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def sync(self) -> None:
        """Bring the broker's credentials/ACL in line with the registry (after a change)."""
        ...

    def kick(self, device_id: str, client_id: str | None) -> None:
        """Disconnect a device's live connection (disabled, deleted, revoked)."""
        ...


def persisted_ports(directory: Path, host: str, wanted: dict[str, int]) -> dict[str, int]:
    """Ports by name: the wanted one, else the one used last time here, else a free one."""
    import json
    import socket

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ports.json"
    saved: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}
    out: dict[str, int] = {}
    for name, port in wanted.items():
        if not port:
            port = saved.get(name, 0)
        if not port:
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
        out[name] = port
    path.write_text(json.dumps({**saved, **out}))
    return out


def own_broker_endpoint(kind: str, data_dir: Path, host: str, options: dict[str, Any]) -> Endpoint:
    """The endpoint of a broker the hub runs itself: TLS with the hub CA (``options["ca"]``),
    both listeners' ports from ``options`` or kept from the last run, the hub's service user."""
    ports = persisted_ports(
        data_dir / "broker",
        host,
        {
            "port": int(options.get("mqtt_port") or 0),
            "cert_port": int(options.get("cert_port") or 0),
        },
    )
    return Endpoint(
        kind=kind,
        host=host,
        port=ports["port"],
        tls=True,
        ca_file=options["ca"].ca_file,
        service_username=p.HUB_USERNAME,
        service_password=service_secret(data_dir),
        cert_port=ports["cert_port"],
    )


def service_secret(data_dir: Path) -> str:
    """The hub service client's broker password (created once, kept in the data directory)."""
    path = data_dir / "broker" / "service.secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


class ExternalBroker:
    """``--broker mqtt(s)://[user:pass@]host:port``: a broker somebody else runs.

    The hub connects with the user name/password in the URL (default ``$edgefleet-hub`` and no
    password); device credentials and ACLs are that broker's business (use the ``%u`` pattern in
    ``docs/messaging.md``).
    """

    def __init__(self, url: str, ca_file: Path | None = None) -> None:
        u = urlsplit(url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError("--broker must be embedded, mosquitto or mqtt(s)://host:port")
        tls = u.scheme == "mqtts"
        self.endpoint = Endpoint(
            kind="external",
            host=u.hostname,
            port=u.port or (8883 if tls else 1883),
            tls=tls,
            ca_file=ca_file,
            service_username=u.username or p.HUB_USERNAME,
            service_password=u.password,
        )
        self.upstream = self.endpoint

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def sync(self) -> None:
        return None

    def kick(self, device_id: str, client_id: str | None) -> None:
        return None


def open_broker(spec: str, data_dir: Path, host: str, options: dict[str, Any]) -> Broker:
    """Build the broker named by ``--broker`` (not started)."""
    if spec == "embedded":
        from cloud_hub.broker.embedded import EmbeddedBroker

        return EmbeddedBroker(data_dir, host, options)
    if spec == "mosquitto":
        from cloud_hub.broker.mosquitto import MosquittoBroker

        return MosquittoBroker(data_dir, host, options)
    return ExternalBroker(spec, options.get("ca_file"))
