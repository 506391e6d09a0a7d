"""IoT Edge's module environment in the edge hub without IoT Hub's SDK: the workload API (over its
unix socket) and who the TLS listener admits in IoT Hub's module dialect."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from urllib.parse import quote

import httpx

from edge_agent.edgehub import acl
from edge_agent.edgehub.credentials import ModuleCredentials
from edge_agent.edgehub.workload_server import WorkloadServer
from edgefleet import sas

API = "?api-version=2019-01-30"
HUB = "hub.example"


def _token(key: str, resource: str, expiry: int) -> bytes:
    sr = quote(resource, safe="")
    sig = quote(sas.signature(sr, str(expiry), key), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}".encode()


def test_the_workload_api_signs_only_for_a_module_itself(tmp_path: Path) -> None:
    creds = ModuleCredentials(tmp_path / "credentials.json")
    a = creds.issue("a")
    creds.issue("b")
    sock = tmp_path / "w.sock"
    server = WorkloadServer(sock, lambda: "-----BEGIN CERTIFICATE-----\n", creds.identity)
    server.start()
    try:
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://workload"
        ) as http:
            bundle = http.get("/trust-bundle" + API)
            assert bundle.status_code == 200
            assert bundle.json() == {"certificate": "-----BEGIN CERTIFICATE-----\n"}

            resource, expiry = f"{HUB}%2Fdevices%2Fdev%2Fmodules%2Fa", "1700000000"
            data = f"{resource}\n{expiry}"
            body = {
                "keyId": "primary",
                "algo": "HMACSHA256",
                "data": base64.b64encode(data.encode()).decode(),
            }
            signed = http.post(f"/modules/a/genid/{a.generation_id}/sign" + API, json=body)
            assert signed.status_code == 200
            assert signed.json() == {"digest": sas.signature(resource, expiry, a.key)}

            # another module's generation id, an unknown module, bad fields, no api-version
            refused = http.post(f"/modules/b/genid/{a.generation_id}/sign" + API, json=body)
            assert refused.status_code == 403 and "generation id" in refused.json()["message"]
            unknown = http.post(f"/modules/zz/genid/{a.generation_id}/sign" + API, json=body)
            assert unknown.status_code == 404
            for field, value in (("keyId", "secondary"), ("algo", "SHA1"), ("data", "%%")):
                bad = http.post(
                    f"/modules/a/genid/{a.generation_id}/sign" + API, json={**body, field: value}
                )
                assert bad.status_code == 400 and bad.json()["message"].startswith(field)
            assert http.get("/trust-bundle").status_code == 400
            assert http.get("/nothing" + API).status_code == 404
    finally:
        server.stop()
    assert not sock.exists()


def test_the_tls_listener_admits_a_module_with_its_own_sas_token(tmp_path: Path) -> None:
    creds = ModuleCredentials(tmp_path / "credentials.json")
    key = creds.issue("a").key
    other = creds.issue("b").key
    now = time.time()
    later = int(now) + 600

    def admit(
        username: str, client_id: str, password: bytes, hub: str = HUB
    ) -> tuple[str, object, float] | None:
        return acl.admit_iothub(username, client_id, password, "dev", hub, creds.identity, now)

    user = f"{HUB}/dev/a/?api-version=2021-04-12"
    good = _token(key, f"{HUB}/devices/dev/modules/a", later)
    admitted = admit(user, "dev/a", good)
    assert admitted is not None and admitted[0] == "a" and admitted[2] == later
    assert admit(user, "dev/a", _token(other, f"{HUB}/devices/dev/modules/a", later)) is None
    assert admit(user, "dev/a", _token(key, f"{HUB}/devices/dev/modules/a", int(now) - 1)) is None
    assert admit(user, "dev/a", _token(key, f"{HUB}/devices/dev/modules/b", later)) is None
    assert admit(user, "dev/b", good) is None  # the user name names another client id
    other_user = f"{HUB}/dev/b/?api-version=2021-04-12"
    assert admit(other_user, "dev/b", good) is None
    assert admit(f"{HUB}/dev2/a/?api-version=1", "dev2/a", good) is None  # another device
    assert admit(user, "dev/a", good, hub="elsewhere") is None  # another IoT Hub host name
    assert admit(f"{HUB}/dev/?api-version=1", "dev", good) is None  # the device, not a module
    assert admit("a", "dev/a", key.encode()) is None  # the native dialect's form
