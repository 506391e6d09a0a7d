"""The twin channel over the hub: the messaging SDK's DeviceClient, module twins of
``$edgeAgent``/``$edgeHub`` on the device's one MQTT connection, and the ``$edgeAgent`` methods.

Connecting never blocks the agent: the client reconnects in the background with backoff, and
``get_desired`` answers None while the hub is unreachable (the agent then runs the persisted
deployment).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_agent.config import AgentConfig, ConfigError, parse_connection_string
from edge_agent.twin_channel import DesiredCallback, MethodHandler
from edgefleet.files import atomic_write_text

log = logging.getLogger("edgefleet.agent.hub")

AGENT = "$edgeAgent"
HUB = "$edgeHub"


class HubChannel:
    def __init__(
        self, client: Any, device_id: str, endpoint: HubEndpoint, warn_after: float = 60.0
    ) -> None:
        self.client = client
        self.device_id = device_id
        self.endpoint = endpoint
        self.warn_after = warn_after
        self._closed = threading.Event()

    def start(self, on_desired: DesiredCallback, on_method: MethodHandler) -> None:
        from edgefleet.sdk.device_client import MethodRequest, MethodResponse

        agent = self.client.module(AGENT)
        hub = self.client.module(HUB)
        agent.on_twin_desired_properties_patch_received = lambda _patch: on_desired(AGENT)
        hub.on_twin_desired_properties_patch_received = lambda _patch: on_desired(HUB)

        def method(request: MethodRequest) -> MethodResponse:
            status, payload = on_method(request.name, request.payload)
            return MethodResponse.create_from_method_request(request, status, payload)

        agent.on_method_request_received = method

        def connect() -> None:
            from edgefleet.sdk.device_client import ClientError

            try:
                self.client.connect(timeout=15)
                log.info("connected to the hub as %s", self.device_id)
            except ClientError as exc:
                log.info("hub not reachable yet (%s); retrying in the background", exc)
            on_desired(AGENT)

        threading.Thread(target=connect, name="hub-connect", daemon=True).start()
        threading.Thread(target=self._watch_link, name="hub-watch", daemon=True).start()

    def _watch_link(self) -> None:
        """Warn (with the address and the setting behind it) while the hub stays unreachable."""
        down_since: float | None = time.monotonic()
        last_warned: float | None = None
        while not self._closed.wait(1.0):
            now = time.monotonic()
            if self.client.connected:
                down_since, last_warned = None, None
                continue
            if down_since is None:
                down_since = now
            message = unreachable_warning(
                self.endpoint, down_since, now, last_warned, self.warn_after
            )
            if message:
                log.warning("%s", message)
                last_warned = now

    def get_desired(self, module: str, timeout: float) -> dict[str, Any] | None:
        if not self.client.connected:
            return None
        try:
            twin = self.client.module(module).get_twin(timeout=timeout)
        except Exception as exc:  # ClientError, TimeoutError: offline or hub trouble
            log.info("twin of %s not read: %s", module, exc)
            return None
        desired = twin.get("desired")
        return dict(desired) if isinstance(desired, dict) else {}

    def report(self, patch: dict[str, Any]) -> bool:
        if not self.client.connected:
            return False
        try:
            self.client.module(AGENT).patch_twin_reported_properties(patch, timeout=15)
            return True
        except Exception as exc:
            log.info("reported properties not sent: %s", exc)
            return False

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self.client.shutdown()


@dataclass(frozen=True)
class HubEndpoint:
    """Where the agent connects, and which setting of agent.yaml chose it (for messages)."""

    host: str
    port: int
    tls: bool
    setting: str

    def describe(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def mqtt_endpoint(cfg: AgentConfig, hostname: str, origin: str) -> HubEndpoint:
    """``hub.mqtt_url`` when set; else ``hostname`` (from ``origin``) on 8883 with TLS."""
    if cfg.hub.mqtt_url:
        u = urlsplit(cfg.hub.mqtt_url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ConfigError("hub.mqtt_url must be mqtt://host:port or mqtts://host:port")
        tls = u.scheme == "mqtts"
        return HubEndpoint(u.hostname, u.port or (8883 if tls else 1883), tls, "hub.mqtt_url")
    return HubEndpoint(hostname.split(":")[0], 8883, True, f"{origin}; hub.mqtt_url overrides it")


def unreachable_warning(
    endpoint: HubEndpoint, down_since: float, now: float, last_warned: float | None, every: float
) -> str | None:
    """The warning to log now, if any: first after ``every`` seconds without a connection, then
    again every ``every * 10`` seconds while it lasts."""
    if now - down_since < every:
        return None
    if last_warned is not None and now - last_warned < every * 10:
        return None
    return (
        f"hub not reachable for {now - down_since:.0f} s at {endpoint.describe()} "
        f"(from {endpoint.setting}); the agent keeps running its last deployment and retries"
    )


def _ca_file(cfg: AgentConfig) -> Path | None:
    """The hub's CA as a file: ``hub.ca_file``, or ``hub.ca_cert`` written under the data dir
    (only when it changed: an agent must start on a full disk; if it cannot be written there,
    a temporary file serves this run)."""
    if cfg.hub.ca_cert is None:
        return cfg.hub.ca_file
    path = cfg.data_dir / "hub-ca.pem"
    try:
        if path.read_text() == cfg.hub.ca_cert:
            return path
    except (OSError, ValueError):
        pass
    try:
        atomic_write_text(path, cfg.hub.ca_cert, mode=0o644)
    except OSError as exc:
        log.warning("hub CA not saved to %s (%s); using a temporary copy", path, exc)
        fd, name = tempfile.mkstemp(prefix="edgefleet-hub-ca-", suffix=".pem")
        with os.fdopen(fd, "w") as f:
            f.write(cfg.hub.ca_cert)
        return Path(name)
    return path


def make_hub_channel(cfg: AgentConfig, device_id: str, device_key: str | None = None) -> HubChannel:
    from edgefleet.sdk.device_client import DeviceClient

    p = cfg.provisioning
    outbox = cfg.data_dir / "outbox.db"
    common: dict[str, Any] = {"outbox_path": outbox, "ca_file": _ca_file(cfg)}
    if p.source == "manual" and p.connection_string:
        parts = parse_connection_string(p.connection_string)
        ep = mqtt_endpoint(cfg, parts["HostName"], "HostName of provisioning.connection_string")
        client = DeviceClient(
            device_id,
            ep.host,
            ep.port,
            symmetric_key=parts["SharedAccessKey"],
            tls=ep.tls,
            **common,
        )
    elif p.source == "manual" and p.authentication is not None:
        ep = mqtt_endpoint(cfg, str(p.iothub_hostname), "provisioning.iothub_hostname")
        client = DeviceClient(
            device_id,
            ep.host,
            ep.port,
            cert_file=p.authentication.identity_cert,
            key_file=p.authentication.identity_pk,
            tls=True,
            **common,
        )
    elif p.source == "dps" and device_key is not None:
        host = urlsplit(str(p.global_endpoint)).netloc
        ep = mqtt_endpoint(cfg, host, "the host of provisioning.global_endpoint")
        client = DeviceClient(
            device_id, ep.host, ep.port, symmetric_key=device_key, tls=ep.tls, **common
        )
    else:
        raise ConfigError(f"provisioning {p.source}: no credentials to connect with")
    return HubChannel(client, device_id, ep, cfg.hub.unreachable_warning_secs)
