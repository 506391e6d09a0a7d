"""IoT Edge's module environment in the edge hub without IoT Hub's SDK: the workload API (over its
unix socket), who the TLS listener admits in IoT Hub's module dialect, and hand-written clients of
that dialect confined to their own module."""

from __future__ import annotations

import base64
import json
import stat
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx

from edge_agent.edgehub import acl, module_methods
from edge_agent.edgehub.answer import Answer
from edge_agent.edgehub.credentials import ModuleCredentials
from edge_agent.edgehub.hub import EdgeHub, EdgeHubConfig
from edge_agent.edgehub.workload_sockets import WorkloadSockets, module_dir_name
from edge_agent.runtime.workload_mount import container_workload
from edgefleet import sas
from tests.support.device_sdk import RawIotHubClient
from tests.support.mqtt import wait_until

API = "?api-version=2019-01-30"
HUB = "hub.example"


def _token(key: str, resource: str, expiry: int) -> bytes:
    sr = quote(resource, safe="")
    sig = quote(sas.signature(sr, str(expiry), key), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}".encode()


def test_each_module_signs_only_for_itself_over_its_own_workload_socket(tmp_path: Path) -> None:
    creds = ModuleCredentials(tmp_path / "credentials.json")
    a, b = creds.issue("a"), creds.issue("b")
    run = tmp_path / "run"
    sockets = WorkloadSockets(run, lambda: "-----BEGIN CERTIFICATE-----\n", creds.identity)
    uri_a = sockets.ensure("a")
    assert uri_a == f"unix://{run}/a/workload.sock" and not (run / "a").exists()  # not started
    sockets.start()
    uri_b = sockets.ensure("b")
    sock_a, sock_b = (Path(u.removeprefix("unix://")) for u in (uri_a, uri_b))
    assert stat.S_IMODE(sock_a.stat().st_mode) == 0o660
    assert stat.S_IMODE(sock_a.parent.stat().st_mode) == 0o750

    def over(sock: Path) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://w")

    resource, expiry = f"{HUB}%2Fdevices%2Fdev%2Fmodules%2Fa", "1700000000"
    body = {
        "keyId": "primary",
        "algo": "HMACSHA256",
        "data": base64.b64encode(f"{resource}\n{expiry}".encode()).decode(),
    }
    try:
        with over(sock_a) as http:
            bundle = http.get("/trust-bundle" + API)
            assert bundle.status_code == 200
            assert bundle.json() == {"certificate": "-----BEGIN CERTIFICATE-----\n"}

            signed = http.post(f"/modules/a/genid/{a.generation_id}/sign" + API, json=body)
            assert signed.status_code == 200
            assert signed.json() == {"digest": sas.signature(resource, expiry, a.key)}

            # b's name (with b's own generation id) on a's socket, another generation id,
            # bad fields, no api-version
            for module_id, gen in (("b", b.generation_id), ("zz", a.generation_id)):
                cross = http.post(f"/modules/{module_id}/genid/{gen}/sign" + API, json=body)
                assert cross.status_code == 403
                assert cross.json() == {
                    "message": f"module 'a' may not sign for module '{module_id}'"
                }
            stale = http.post(f"/modules/a/genid/{b.generation_id}/sign" + API, json=body)
            assert stale.status_code == 403 and "generation id" in stale.json()["message"]
            for field, value in (("keyId", "secondary"), ("algo", "SHA1"), ("data", "%%")):
                bad = http.post(
                    f"/modules/a/genid/{a.generation_id}/sign" + API, json={**body, field: value}
                )
                assert bad.status_code == 400 and bad.json()["message"].startswith(field)
            assert http.get("/trust-bundle").status_code == 400
            assert http.get("/nothing" + API).status_code == 404
        with over(sock_b) as http:  # b signs for itself on its own socket, with its own key
            signed = http.post(f"/modules/b/genid/{b.generation_id}/sign" + API, json=body)
            assert signed.json() == {"digest": sas.signature(resource, expiry, b.key)}

        # a module removed from the deployment loses its socket and directory; a leftover too
        (run / "gone").mkdir()
        sockets.retain(["b"])
        assert not sock_a.exists() and not (run / "a").exists() and not (run / "gone").exists()
        assert sock_b.exists()
    finally:
        sockets.stop()
    # stopped: the sockets go, the directories stay for the containers that mount them
    assert not sock_b.exists() and sock_b.parent.is_dir()
    sockets.start(["b", "a"])  # a restart serves again the modules whose directory is there
    try:
        assert sock_b.exists() and not sock_a.exists()
    finally:
        sockets.stop()


def test_a_module_socket_path_stays_within_a_unix_socket_address(tmp_path: Path) -> None:
    assert module_dir_name(Path("/var/lib/e/run"), "filter") == "filter"
    long_name = "m" * 100
    digest = module_dir_name(Path("/var/lib/e/run"), long_name)
    assert digest is not None and len(digest) == 16
    assert module_dir_name(Path("/var/lib/e/run"), "..") not in ("..", None)
    assert module_dir_name(Path("/" + "d" * 100), "filter") is None
    too_deep = WorkloadSockets(tmp_path / ("d" * 100), lambda: "", lambda _m: None)
    too_deep.start()
    assert too_deep.ensure("filter") == ""  # no socket, so no IOTEDGE_WORKLOADURI to follow
    too_deep.stop()


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


def test_modules_on_the_tls_listener_stay_within_their_own_identity(tmp_path: Path) -> None:
    host = "127.0.0.1"  # gateway, IoT Hub host name and certificate name alike
    config = EdgeHubConfig("dev", tmp_path / "edgehub", iothub_host=host, iothub_port=0)
    hub = EdgeHub(config, upstream=None)
    route = 'FROM /messages/modules/a/outputs/o INTO BrokeredEndpoint("/modules/b/inputs/i")'
    hub.apply_desired({"routes": {"r": route}})
    hub.start()
    clients: list[RawIotHubClient] = []

    def raw(module_id: str, key: str) -> RawIotHubClient:
        resource = f"{host}/devices/dev/modules/{module_id}"
        token = _token(key, resource, int(time.time()) + 600).decode()
        ca = tmp_path / "edgehub" / "ca" / "ca.pem"
        client = RawIotHubClient(host, ca, f"dev/{module_id}", token, port=hub.iothub_port)
        clients.append(client)
        return client

    try:
        key_a = hub.module_env("a")["IOTEDGE_MODULEKEY"]
        key_b = hub.module_env("b")["IOTEDGE_MODULEKEY"]
        assert raw("a", key_b).connect() in (134, 135)  # another module's key: refused
        a, b = raw("a", key_a), raw("b", key_b)
        assert a.connect() == 0 and b.connect() == 0
        for wide in ("$iothub/#", "devices/#", "#", "devices/dev/modules/a/#", "devices/+/+/+/#"):
            assert b.subscribe(wide) == [0x80], wide
        for own in (
            "$iothub/twin/res/#",
            "$iothub/twin/PATCH/properties/desired/#",
            "$iothub/methods/POST/#",
            "devices/dev/modules/b/inputs/#",
        ):
            assert b.subscribe(own) == [1], own
        assert a.subscribe("$iothub/twin/res/#") == [1]
        assert a.subscribe("$iothub/methods/POST/#") == [1]

        # a's twin request is answered on a's own response topic (503: no upstream here)
        a.client.publish("$iothub/twin/GET/?$rid=7", b"", qos=1)
        assert wait_until(lambda: len(a.messages) == 1)
        assert a.messages[0][0] == "$iothub/twin/res/503/?$rid=7"

        # a direct method for a reaches a, in IoT Hub's form, and its answer comes back
        def answer() -> None:
            assert wait_until(lambda: len(a.messages) == 2)
            topic = a.messages[1][0]
            assert topic.startswith("$iothub/methods/POST/ping/?$rid=")
            rid = topic.rsplit("=", 1)[1]
            a.client.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"pong": 1}', qos=1)

        responder = threading.Thread(target=answer)
        responder.start()
        assert hub.methods.call_module("a", "ping", {}) == (200, {"pong": 1})
        responder.join()

        # a's output (IoT Hub's ``$.on``) is routed to b's input, in IoT Hub's input topic
        a.client.publish("devices/dev/modules/a/messages/events/%24.on=o&k=v", b"hi", qos=1)
        assert wait_until(lambda: len(b.messages) == 1)
        topic, payload = b.messages[0]
        assert topic.startswith("devices/dev/modules/b/inputs/i/") and "k=v" in topic
        assert payload == b"hi"
        assert len(a.messages) == 2  # nothing of b's reached a, nothing of a's reached b

        # publishing as another module closes the connection
        a.client.publish("devices/dev/modules/b/messages/events/%24.on=o", b"x", qos=1)
        assert a.disconnected.wait(20)
        assert len(b.messages) == 1
    finally:
        for client in clients:
            client.close()
        hub.stop()


def test_a_container_gets_the_workload_socket_mounted_where_iot_edge_puts_it() -> None:
    sock = "/var/lib/agent/edgehub/run/modules/m1/workload.sock"
    inside, binds = container_workload({"IOTEDGE_WORKLOADURI": f"unix://{sock}", "X": "1"})
    assert inside == {"IOTEDGE_WORKLOADURI": "unix:///var/run/iotedge/workload.sock", "X": "1"}
    assert binds == ["/var/lib/agent/edgehub/run/modules/m1:/var/run/iotedge"]
    assert container_workload({"X": "1"}) == ({"X": "1"}, [])


def test_module_to_module_methods_need_the_callers_own_token() -> None:
    calls: list[tuple[str, str, object, float]] = []

    def call(module_id: str, name: str, payload: object, timeout: float) -> tuple[int, object]:
        calls.append((module_id, name, payload, timeout))
        return 201, {"ok": True}

    def admit(caller: str, token: str) -> bool:
        return (caller, token) == ("b", "token-of-b")

    good = {"x-ms-edge-moduleid": "dev/b", "authorization": "token-of-b"}
    path = "/twins/dev/modules/a/methods?api-version=2021-04-12"
    body = json.dumps({"methodName": "ping", "payload": [1], "responseTimeoutInSeconds": 5})

    def ask(headers: dict[str, str], target: str = path, raw: str = body) -> Answer:
        return module_methods.handle("POST", target, headers, raw.encode(), "dev", admit, call)

    answer = ask(good)
    assert (answer.status, answer.body) == (200, {"status": 201, "payload": {"ok": True}})
    assert calls == [("a", "ping", [1], 5.0)]
    assert ask({**good, "authorization": "token-of-a"}).status == 401
    assert ask({**good, "x-ms-edge-moduleid": "dev2/b"}).status == 401
    assert ask({"authorization": "token-of-b"}).status == 401
    assert ask(good, "/twins/dev2/modules/a/methods").status == 501  # another device
    assert ask(good, "/twins/dev/methods").status == 501  # the device itself
    assert ask(good, raw="{}").body == {"message": "methodName: a string is required"}
    assert ask(good, raw="not json").status == 400
    assert ask(good, "/twins/dev/modules/a").status == 404
    assert len(calls) == 1
    offline = module_methods.handle(
        "POST", path, good, body.encode(), "dev", admit, lambda *_: None
    )
    assert offline.status == 404 and "not connected" in offline.body["message"]
