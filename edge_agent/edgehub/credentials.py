"""Module credentials for the local broker: one password per module in ``credentials.json``
(owner-only), and the environment that hands a module its identity, the broker and its password.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from pathlib import Path

from edgefleet.files import atomic_write_json

log = logging.getLogger("edgefleet.edgehub")


class ModuleCredentials:
    """The passwords of the device's modules, created on first use and kept across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._passwords = _load(path)
        self._unsaved = False

    def modules(self) -> list[str]:
        return list(self._passwords)

    def get(self, module_id: str) -> str | None:
        return self._passwords.get(module_id)

    def issue(self, module_id: str) -> str:
        """The module's password; a new one is created and saved the first time. A save that
        fails (a full disk) is logged and tried again with the next call: the module gets its
        password now, and a new one only if the agent restarts before the save succeeds."""
        with self._lock:
            password = self._passwords.get(module_id)
            if password is None:
                password = secrets.token_urlsafe(24)
                self._passwords[module_id] = password
                self._unsaved = True
            if self._unsaved:
                try:
                    atomic_write_json(self.path, self._passwords)
                    self._unsaved = False
                except OSError as exc:
                    log.warning("module credentials not saved: %s", exc)
        return password


def _load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def module_env(
    device_id: str, module_id: str, host: str, port: int, password: str
) -> dict[str, str]:
    """Environment for a module: its identity, the local broker and its own credentials."""
    conn = (
        f"HostName={host};GatewayHostName={host};Port={port};"
        f"DeviceId={device_id};ModuleId={module_id};SharedAccessKey={password}"
    )
    return {
        "IOTEDGE_DEVICEID": device_id,
        "IOTEDGE_MODULEID": module_id,
        "IOTEDGE_GATEWAYHOSTNAME": host,
        "IOTEDGE_EDGEHUBPORT": str(port),
        "IOTEDGE_MODULEKEY": password,
        "EdgeHubConnectionString": conn,
    }
