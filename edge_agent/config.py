"""The agent's configuration file (YAML or JSON), shaped like IoT Edge's ``config.toml``.

```yaml
hostname: edge-01                      # optional, reported and given to modules
provisioning:
  source: manual                       # manual | dps | local
  connection_string: "HostName=hub:8080;DeviceId=edge-01;SharedAccessKey=..."
data_dir: /var/lib/edgefleet-agent
runtime:
  type: auto                           # docker | process | auto
```
See docs/agent.md for every field.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_agent.create_options_policy import CreateOptionsPolicy
from edgefleet.connection_string import parse_connection_string as parse


class ConfigError(ValueError):
    """A configuration the agent cannot run with; the message is one line for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class X509Auth(_Strict):
    method: Literal["x509"] = "x509"
    identity_cert: Path
    identity_pk: Path


class Attestation(_Strict):
    method: Literal["symmetric_key"] = "symmetric_key"
    registration_id: str = Field(min_length=1, max_length=128)
    enrollment_group_id: str | None = None
    symmetric_key: str = Field(min_length=1, description="base64 group key (enrollment group)")

    def device_key(self) -> str:
        """DPS group attestation: base64(HMAC-SHA256(base64-decoded group key, device id))."""
        return derive_device_key(self.symmetric_key, self.registration_id)


class Provisioning(_Strict):
    source: Literal["manual", "dps", "local"]
    # manual, symmetric key
    connection_string: str | None = None
    # manual, device certificate
    iothub_hostname: str | None = None
    device_id: str | None = None
    authentication: X509Auth | None = None
    # dps: the hub's REST endpoint that registers devices, and the group attestation
    global_endpoint: str | None = None
    attestation: Attestation | None = None
    # local (standalone): a deployment manifest file instead of a hub
    manifest: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> Provisioning:
        if self.source == "manual":
            if self.connection_string:
                parse_connection_string(self.connection_string)
            elif not (self.authentication and self.iothub_hostname and self.device_id):
                raise ValueError(
                    "manual provisioning needs connection_string, or iothub_hostname + device_id"
                    " + authentication {method: x509, identity_cert, identity_pk}"
                )
        elif self.source == "dps":
            if not (self.global_endpoint and self.attestation):
                raise ValueError("dps provisioning needs global_endpoint and attestation")
            if not self.attestation.enrollment_group_id:
                raise ValueError("dps attestation needs enrollment_group_id")
        elif self.source == "local" and not self.manifest:
            raise ValueError("local provisioning needs manifest (a deployment manifest file)")
        return self


class DockerSettings(_Strict):
    url: str | None = Field(default=None, description="Docker engine URL; default: environment")
    name_prefix: str = ""
    log_max_size: str = "10m"
    log_max_file: int = Field(default=3, ge=1)
    image_gc_secs: float = Field(default=7 * 86400, ge=0)
    stop_modules_on_exit: bool = False


class ProcessSettings(_Strict):
    log_max_bytes: int = Field(default=1 << 20, ge=1024)
    log_backups: int = Field(default=3, ge=0)


class RuntimeConfig(_Strict):
    type: Literal["docker", "process", "auto"] = "auto"
    docker: DockerSettings = Field(default_factory=DockerSettings)
    process: ProcessSettings = Field(default_factory=ProcessSettings)


class ReconcileConfig(_Strict):
    interval_secs: float = Field(default=5.0, gt=0)
    backoff_base_secs: float = Field(default=10.0, ge=0)
    backoff_max_secs: float = Field(default=300.0, ge=0)
    max_restarts: int = Field(default=20, ge=0)
    healthy_reset_secs: float = Field(default=600.0, ge=0)
    report_debounce_secs: float = Field(default=1.0, ge=0)
    gc_interval_secs: float = Field(default=3600.0, gt=0)
    stop_timeout_secs: float = Field(default=10.0, ge=0)


class HubConfig(_Strict):
    """How to reach the hub's MQTT endpoint; by default ``HostName`` of the connection string on
    port 8883 with TLS, as IoT Hub's device SDKs connect."""

    mqtt_url: str | None = Field(default=None, description="mqtts://host:port (or mqtt://)")
    ca_file: Path | None = Field(default=None, description="CA that signed the hub's certificate")
    ca_cert: str | None = Field(default=None, description="The same CA inline (PEM text)")
    unreachable_warning_secs: float = Field(
        default=60.0, gt=0, description="Warn when the hub has been unreachable this long"
    )

    @model_validator(mode="after")
    def _one_ca(self) -> HubConfig:
        if self.ca_file and self.ca_cert:
            raise ValueError("give the hub's CA once: ca_file or ca_cert, not both")
        if self.ca_cert is not None and "BEGIN CERTIFICATE" not in self.ca_cert:
            raise ValueError("ca_cert must be a PEM certificate (-----BEGIN CERTIFICATE-----)")
        return self


class AgentConfig(_Strict):
    hostname: str | None = None
    provisioning: Provisioning
    data_dir: Path = Path("/var/lib/edgefleet-agent")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    hub: HubConfig = Field(default_factory=HubConfig)
    edge_hub: bool = Field(default=True, description="Run the edge hub inside the agent")
    edge_hub_host: str = Field(default="127.0.0.1", description="Edge hub listen address")
    edge_hub_port: int = Field(default=0, ge=0, le=65535, description="0: chosen once, kept")
    edge_hub_gateway_host: str | None = Field(
        default="127.0.0.2",
        description="Address of the edge hub's TLS listener in IoT Hub's module dialect, for "
        "modules on IoT Hub's SDK (create_from_edge_environment); null: not served",
    )
    edge_hub_gateway_port: int = Field(
        default=8883, ge=0, le=65535, description="Its port (IoT Hub's SDKs connect to 8883)"
    )
    edge_hub_gateway_https_port: int = Field(
        default=443,
        ge=0,
        le=65535,
        description="HTTPS port for module-to-module methods of IoT Hub's SDK (it calls 443)",
    )
    edge_hub_gateway_hostname: str | None = Field(
        default=None,
        description="Gateway host name given to modules and in the listener's certificate "
        "(default: edge_hub_gateway_host)",
    )
    edge_hub_container_gateway_host: str | None = Field(
        default="auto",
        description="Where container modules (not on the host's network) reach the edge hub: "
        "'auto', the gateway address of the docker network each joins; an IP address of this "
        "host; null: what process modules get",
    )
    edge_hub_store_max_bytes: int = Field(
        default=1 << 30, ge=0, description="Store-and-forward cap (oldest evicted); 0: none"
    )
    edge_hub_forward_window: int = Field(
        default=256,
        ge=1,
        description="Messages handed from the store to the upstream outbox ahead of their "
        "acknowledgements (outside the store's cap)",
    )
    create_options_policy: CreateOptionsPolicy = Field(
        default_factory=CreateOptionsPolicy,
        description="What docker modules' createOptions may ask for (off by default)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("edge_hub_container_gateway_host")
    @classmethod
    def _container_gateway(cls, value: str | None) -> str | None:
        if value is None or value == "auto":
            return value
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be 'auto', an IP address or null") from None
        if address.is_unspecified:
            raise ValueError("must be an address the containers reach, not a wildcard")
        return str(address)


DEVICE_KEYS = ("HostName", "DeviceId", "SharedAccessKey")


def parse_connection_string(text: str) -> dict[str, str]:
    """A device connection string with everything the agent needs to authenticate."""
    return parse(text, required=DEVICE_KEYS)


def derive_device_key(group_key_b64: str, device_id: str) -> str:
    try:
        key = base64.b64decode(group_key_b64, validate=True)
    except ValueError as exc:
        raise ValueError("group key is not valid base64") from exc
    digest = hmac.new(key, device_id.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _where(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
    return loc or "config"


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate the config file; raises ConfigError with one clear line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (ValueError, Exception) as exc:  # yaml.YAMLError or JSONDecodeError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config {p} is not valid YAML/JSON: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {p} must be a mapping")
    try:
        cfg = AgentConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"config {p}: {_where(dict(err))}: {msg}") from None
    if not cfg.data_dir.is_absolute():
        cfg.data_dir = (p.parent / cfg.data_dir).resolve()
    if cfg.provisioning.manifest and not cfg.provisioning.manifest.is_absolute():
        cfg.provisioning.manifest = (p.parent / cfg.provisioning.manifest).resolve()
    return cfg
