"""DPS-style self-registration with an enrollment group's symmetric key.

The device key is ``base64(HMAC-SHA256(base64-decoded group key, device id))``; the device proves
it holds that key with a SAS token over ``{group}/registrations/{id}`` and the hub, which knows the
group key, creates the device identity with that key on first boot. The result is cached in the
data directory, so later boots do not need the registration endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edgefleet.files import atomic_write_json

log = logging.getLogger("edgefleet.agent.provisioning")


def sas_token(key_b64: str, resource: str, ttl: int = 3600, now: float | None = None) -> str:
    expiry = int((now or time.time()) + ttl)
    sr = quote(resource, safe="")
    mac = hmac.new(base64.b64decode(key_b64), f"{sr}\n{expiry}".encode(), hashlib.sha256)
    sig = quote(base64.b64encode(mac.digest()).decode(), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}&skn=registration"


def register(
    endpoint: str, group_id: str, registration_id: str, device_key: str, timeout: float = 10
) -> dict[str, Any]:
    """POST {endpoint}/registrations/{id}/register; raises httpx.HTTPError on failure."""
    import httpx

    resource = f"{group_id}/registrations/{registration_id}"
    r = httpx.post(
        f"{endpoint.rstrip('/')}/registrations/{registration_id}/register",
        json={"registrationId": registration_id, "enrollmentGroupId": group_id},
        headers={"Authorization": sas_token(device_key, resource)},
        timeout=timeout,
    )
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


class Registration:
    """Registers once (cached in ``provisioning.json``), retrying in the background."""

    def __init__(
        self, data_dir: Path, endpoint: str, group_id: str, registration_id: str, key: str
    ) -> None:
        self.cache = data_dir / "provisioning.json"
        self.args = (endpoint, group_id, registration_id, key)
        self.done = threading.Event()
        self.result: dict[str, Any] | None = None
        try:
            self.result = json.loads(self.cache.read_text())
            self.done.set()
        except (OSError, ValueError):
            pass

    def ensure(self, first_timeout: float = 10) -> None:
        if self.done.is_set():
            return
        if self._try(first_timeout):
            return
        threading.Thread(target=self._retry, name="dps-register", daemon=True).start()

    def _try(self, timeout: float) -> bool:
        import httpx

        try:
            self.result = register(*self.args, timeout=timeout)
        except httpx.HTTPError as exc:
            log.warning("registration with %s failed: %s", self.args[0], exc)
            return False
        atomic_write_json(self.cache, self.result)
        self.done.set()
        log.info("registered %s: %s", self.args[2], self.result.get("status"))
        return True

    def _retry(self) -> None:
        delay = 2.0
        while not self._try(10):
            time.sleep(delay)
            delay = min(delay * 2, 60)
