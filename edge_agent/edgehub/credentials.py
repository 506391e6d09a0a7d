"""Module credentials: one symmetric key and one generation id per module in ``credentials.json``
(owner-only), and the environment that hands a module its identity, the edge hub and its key.

Keys are 32 random bytes, base64 (what IoT Hub's SDKs accept as a symmetric key). Keys stored by
earlier versions (URL-safe text) stay valid: on the native listener the key is compared as a
password, and ``key_bytes`` gives the HMAC key of either form for SAS signing and checking.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from edgefleet.files import atomic_write_json

log = logging.getLogger("edgefleet.edgehub")


@dataclass(frozen=True)
class ModuleIdentity:
    key: str
    generation_id: str


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def new_generation_id() -> str:
    return secrets.token_hex(8)


def key_bytes(key: str) -> bytes:
    """The HMAC key of a stored module key: its base64 decoding, or (keys of earlier versions
    that are not base64) its text."""
    try:
        return base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return key.encode()


class ModuleCredentials:
    """The keys of the device's modules, created on first use and kept across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._ids, migrated = _load(path)
        self._unsaved = migrated
        if migrated:
            with self._lock:
                self._save()

    def modules(self) -> list[str]:
        return list(self._ids)

    def get(self, module_id: str) -> str | None:
        ident = self._ids.get(module_id)
        return None if ident is None else ident.key

    def identity(self, module_id: str) -> ModuleIdentity | None:
        return self._ids.get(module_id)

    def issue(self, module_id: str) -> ModuleIdentity:
        """The module's identity; a new one is created and saved the first time. A save that
        fails (a full disk) is logged and tried again with the next call: the module gets its
        identity now, and a new one only if the agent restarts before the save succeeds."""
        with self._lock:
            ident = self._ids.get(module_id)
            if ident is None:
                ident = ModuleIdentity(new_key(), new_generation_id())
                self._ids[module_id] = ident
                self._unsaved = True
            if self._unsaved:
                self._save()
        return ident

    def _save(self) -> None:
        data = {m: {"key": i.key, "generationId": i.generation_id} for m, i in self._ids.items()}
        try:
            atomic_write_json(self.path, data)
            self._unsaved = False
        except OSError as exc:
            log.warning("module credentials not saved: %s", exc)


def _load(path: Path) -> tuple[dict[str, ModuleIdentity], bool]:
    """The stored identities, and whether some came in the old form (a bare key, no generation
    id: one is given to it here and saved)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, False
    if not isinstance(data, dict):
        return {}, False
    out: dict[str, ModuleIdentity] = {}
    migrated = False
    for module_id, value in data.items():
        if isinstance(value, dict) and isinstance(value.get("key"), str):
            gen = str(value.get("generationId") or "") or new_generation_id()
            migrated |= not value.get("generationId")
            out[str(module_id)] = ModuleIdentity(value["key"], gen)
        elif isinstance(value, str):
            out[str(module_id)] = ModuleIdentity(value, new_generation_id())
            migrated = True
    return out, migrated


@dataclass(frozen=True)
class EdgeEndpoints:
    """Where a module finds the edge hub: the native listener, and IoT Edge's environment
    (the TLS listener's gateway host name, the IoT Hub host name, the workload API)."""

    host: str
    port: int
    gateway_hostname: str
    iothub_hostname: str
    workload_uri: str


WORKLOAD_API_VERSION = "2019-01-30"


def module_env(
    device_id: str, module_id: str, ident: ModuleIdentity, where: EdgeEndpoints
) -> dict[str, str]:
    """Environment for a module: its identity, the edge hub and its own key. The IOTEDGE_* set is
    IoT Edge's (``create_from_edge_environment``); IOTEDGE_EDGEHUBHOST/PORT and IOTEDGE_MODULEKEY
    are edgefleet's own native listener. The connection string has no ``Port=`` (IoT Hub's SDKs
    refuse it): IoT Hub's SDKs connect to 8883 of ``GatewayHostName``."""
    conn = (
        f"HostName={where.iothub_hostname};GatewayHostName={where.gateway_hostname};"
        f"DeviceId={device_id};ModuleId={module_id};SharedAccessKey={ident.key}"
    )
    return {
        "IOTEDGE_IOTHUBHOSTNAME": where.iothub_hostname,
        "IOTEDGE_DEVICEID": device_id,
        "IOTEDGE_MODULEID": module_id,
        "IOTEDGE_GATEWAYHOSTNAME": where.gateway_hostname,
        "IOTEDGE_MODULEGENERATIONID": ident.generation_id,
        "IOTEDGE_WORKLOADURI": where.workload_uri,
        "IOTEDGE_APIVERSION": WORKLOAD_API_VERSION,
        "IOTEDGE_AUTHSCHEME": "sasToken",
        "IOTEDGE_EDGEHUBHOST": where.host,
        "IOTEDGE_EDGEHUBPORT": str(where.port),
        "IOTEDGE_MODULEKEY": ident.key,
        "EdgeHubConnectionString": conn,
    }
