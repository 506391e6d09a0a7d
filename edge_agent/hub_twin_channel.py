"""The twin channel over the hub: the messaging SDK's DeviceClient, module twins of
``$edgeAgent``/``$edgeHub`` on the device's one MQTT connection, and the ``$edgeAgent`` methods.

Connecting never blocks the agent: the client reconnects in the background with backoff, and
``get_desired`` answers None while the hub is unreachable (the agent then runs the persisted
deployment).
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit

from edge_agent.config import AgentConfig, ConfigError, parse_connection_string
from edge_agent.twin_channel import DesiredCallback, MethodHandler

log = logging.getLogger("edgefleet.agent.hub")

AGENT = "$edgeAgent"
HUB = "$edgeHub"


class HubChannel:
    def __init__(self, client: Any, device_id: str) -> None:
        self.client = client
        self.device_id = device_id
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
                log.warning("hub not reachable yet (%s); retrying in the background", exc)
            on_desired(AGENT)

        threading.Thread(target=connect, name="hub-connect", daemon=True).start()

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


def _mqtt_endpoint(cfg: AgentConfig, hostname: str) -> tuple[str, int, bool]:
    """(host, port, tls) from ``hub.mqtt_url``; default: the hub host name, 8883, TLS."""
    if cfg.hub.mqtt_url:
        u = urlsplit(cfg.hub.mqtt_url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ConfigError("hub.mqtt_url must be mqtt://host:port or mqtts://host:port")
        tls = u.scheme == "mqtts"
        return u.hostname, u.port or (8883 if tls else 1883), tls
    return hostname.split(":")[0], 8883, True


def make_hub_channel(cfg: AgentConfig, device_id: str, device_key: str | None = None) -> HubChannel:
    from edgefleet.sdk.device_client import DeviceClient

    p = cfg.provisioning
    outbox = cfg.data_dir / "outbox.db"
    common: dict[str, Any] = {"outbox_path": outbox, "ca_file": cfg.hub.ca_file}
    if p.source == "manual" and p.connection_string:
        parts = parse_connection_string(p.connection_string)
        host, port, tls = _mqtt_endpoint(cfg, parts["HostName"])
        client = DeviceClient(
            device_id, host, port, symmetric_key=parts["SharedAccessKey"], tls=tls, **common
        )
    elif p.source == "manual" and p.authentication is not None:
        host, port, tls = _mqtt_endpoint(cfg, str(p.iothub_hostname))
        client = DeviceClient(
            device_id,
            host,
            port,
            cert_file=p.authentication.identity_cert,
            key_file=p.authentication.identity_pk,
            tls=True,
            **common,
        )
    elif p.source == "dps" and device_key is not None:
        host, port, tls = _mqtt_endpoint(cfg, urlsplit(str(p.global_endpoint)).netloc)
        client = DeviceClient(device_id, host, port, symmetric_key=device_key, tls=tls, **common)
    else:
        raise ConfigError(f"provisioning {p.source}: no credentials to connect with")
    return HubChannel(client, device_id)
