"""Hub configuration: one pydantic object built by `edgefleet hub serve` (or by tests)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class HubSettings(BaseModel):
    """Everything a hub process needs to start.

    Features add their own fields here (with defaults); unknown keyword arguments are kept too,
    so an extension can read ``settings.model_extra`` before it has a field of its own.
    """

    model_config = ConfigDict(extra="allow")

    data_dir: Path = Field(default=Path("./hub-data"), description="Directory for hub state.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite at <data_dir>/hub.db."
    )
    host: str = "127.0.0.1"
    port: int = 8080
    public_host_name: str | None = Field(
        default=None,
        description="Host name devices use (connection strings); default: --host.",
    )
    tls_port: int | None = Field(
        default=None, description="HTTPS port of the REST API (beside the plain HTTP port)."
    )
    tls_cert: Path | None = Field(
        default=None, description="HTTPS certificate (PEM); default: issued by the hub CA."
    )
    tls_key: Path | None = Field(default=None, description="Private key of tls_cert (PEM).")
    log_level: str = "info"
    deployment_tick_secs: float = Field(
        default=1.0, gt=0, description="How often rollouts advance and assignment runs."
    )
    metrics_interval_secs: float = Field(
        default=2.0, gt=0, description="Configuration metrics refresh at most this often."
    )

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hub.db').resolve()}"

    def resolved_public_host_name(self) -> str:
        """The HostName of connection strings: bare, as IoT Hub's (devices add port 8883)."""
        if self.public_host_name:
            return self.public_host_name
        if self.host in ("0.0.0.0", "::", ""):
            return socket.getfqdn()
        return self.host
