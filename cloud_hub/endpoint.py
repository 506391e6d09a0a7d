"""Where service clients reach the hub, recorded in the data directory for offline commands.

``hub serve`` writes ``<data-dir>/endpoint.json`` (the public host name and the HTTP and HTTPS
ports it listens on) when it starts; ``hub connection-string`` reads it, so a connection string
can be printed without a running hub and without repeating the serve options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloud_hub.settings import HubSettings
from edgefleet.files import atomic_write_json

FILE_NAME = "endpoint.json"
HTTPS_DEFAULT_PORT = 443


def record(settings: HubSettings) -> None:
    """Write the endpoint of a hub that is about to serve."""
    atomic_write_json(
        settings.data_dir / FILE_NAME,
        {
            "hostName": settings.resolved_public_host_name(),
            "port": settings.port,
            "tlsPort": settings.tls_port,
        },
        mode=0o644,
        indent=2,
    )


def recorded(data_dir: Path) -> dict[str, Any] | None:
    """The endpoint the hub of ``data_dir`` recorded last, None when it never served."""
    try:
        data = json.loads((data_dir / FILE_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def service_host_name(host: str, tls_port: int) -> str:
    """The ``HostName`` of a service connection string: the SDKs call ``https://<HostName>``,
    so a port other than 443 rides in it."""
    return host if tls_port == HTTPS_DEFAULT_PORT else f"{host}:{tls_port}"


def service_connection_string(host_name: str, policy: str, key: str) -> str:
    return f"HostName={host_name};SharedAccessKeyName={policy};SharedAccessKey={key}"
