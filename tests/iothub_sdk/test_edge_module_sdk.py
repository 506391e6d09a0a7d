"""An IoT Edge module on Microsoft's unmodified device SDK (``create_from_edge_environment``, from
the SDK's own virtualenv), run by the agent as a process against a real hub: the workload API,
the edge hub's TLS listener in IoT Hub's module dialect, routes to another SDK module's input and
to ``$upstream``, the module twin and a desired patch; then an outage of the hub link, through
which module-to-module routing goes on and the upstream messages wait in the edge hub's store."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from composition.processes import free_loopback
from edge_agent.runtime.docker import LABEL_AGENT
from tests.support.agent import AgentProcess, hub_agent, manifest
from tests.support.device_sdk import IOTHUB_PORT, sdk_python
from tests.support.docker import TEST_LABEL, build_busybox_image, cleanup_label, docker_client
from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import wait_until
from tests.support.tcpproxy import TcpProxy

DRIVER = Path(__file__).parent / "edge_module_driver.py"


# run in a container: signs for its own module and for sdkb over the mounted workload socket
SIGN = """
import http.client, json, os, socket
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect("/var/run/iotedge/workload.sock")
def sign(module):
    gen = os.environ["IOTEDGE_MODULEGENERATIONID"]
    body = json.dumps({"keyId": "primary", "algo": "HMACSHA256", "data": "aGk="})
    http = Unix("workload")
    http.request("POST", f"/modules/{module}/genid/{gen}/sign?api-version=2019-01-30", body)
    answer = http.getresponse()
    return [answer.status, json.loads(answer.read())]
print(json.dumps([sign(os.environ["IOTEDGE_MODULEID"]), sign("sdkb")]))
"""


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path for the agent: its data dir holds the modules' workload
    sockets, whose paths must fit a unix socket's address (107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ef-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _events(log: Path) -> list[dict[str, Any]]:
    """The driver's JSON lines in a module's log (``time<TAB>stream<TAB>line``; the SDK's own
    log lines are skipped)."""
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        text = line.rsplit("\t", 1)[-1]
        if text.startswith('{"event"'):
            out.append(json.loads(text))
    return out


def _wait_event(log: Path, event: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in _events(log) if e["event"] in (event, "error")]
        if found:
            assert found[0]["event"] == event, found[0]
            return found[0]
        time.sleep(0.1)
    text = log.read_text() if log.exists() else "(no log)"
    raise AssertionError(f"no {event!r} in {log}:\n{text[-3000:]}")


def _stored(hub: RunningHub, device_id: str) -> list[dict[str, Any]]:
    with hub.client() as api:
        body = api.request("GET", f"/devices/{device_id}/messages", params={"limit": 100}).json()
    messages: list[dict[str, Any]] = body["messages"]
    return messages


def _stored_ids(hub: RunningHub, device_id: str) -> set[str]:
    return {m["messageId"] for m in _stored(hub, device_id)}


def _inputs(log: Path) -> list[str]:
    return [e["messageId"] for e in _events(log) if e["event"] == "input"]


def _module(*args: str) -> dict[str, Any]:
    command = [str(sdk_python()), str(DRIVER), *args]
    return {"type": "process", "status": "running", "settings": {"command": command}}


def test_an_iot_edge_module_on_the_sdk_runs_under_the_agent(
    tmp_path: Path, short_tmp: Path
) -> None:
    device = f"edge-sdk-{uuid.uuid4().hex[:6]}"
    gateway = free_loopback(IOTHUB_PORT)
    burst = tmp_path / "burst"
    modules = {
        "sdka": _module("--send", "out1", "--burst-on", str(burst)),
        "sdkb": _module("--invoke", "sdka"),
    }
    routes = {
        "toB": "FROM /messages/modules/sdka/outputs/out1"
        ' INTO BrokeredEndpoint("/modules/sdkb/inputs/in1")',
        "up": "FROM /messages/modules/sdka/outputs/* INTO $upstream",
    }
    with running_hub(tmp_path) as hub:
        api = hub.client()
        api.create_device(device, {"capabilities": {"iotEdge": True}})
        agent_twin = {
            "schemaVersion": "1.1",
            "runtime": {"type": "docker", "settings": {}},
            "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "a"}}},
            "modules": modules,
        }
        api.patch_twin(device, {"properties": {"desired": agent_twin}}, "$edgeAgent")
        hub_twin = {"schemaVersion": "1.2", "routes": routes}
        api.patch_twin(device, {"properties": {"desired": hub_twin}}, "$edgeHub")
        proxies: list[TcpProxy] = []

        def relay(host: str, port: int) -> tuple[str, int]:
            proxies.append(TcpProxy(port, host))
            return "127.0.0.1", proxies[-1].port

        agent = hub_agent(hub, short_tmp / "agent", device, relay, edge_hub_gateway_host=gateway)
        agent.start()
        logs = agent.data_dir / "logs"
        try:
            _wait_event(logs / "sdka.log", "connected")
            assert _wait_event(logs / "sdka.log", "sent")["output"] == "out1"
            sockets = agent.data_dir / "edgehub" / "run" / "modules"
            assert {p.name for p in sockets.iterdir()} == {"sdka", "sdkb"}  # each its own
            twin = _wait_event(logs / "sdka.log", "twin")["twin"]
            assert set(twin) == {"desired", "reported"}
            _wait_event(logs / "sdka.log", "ready")

            # the route delivered the output to the other SDK module's input
            got = _wait_event(logs / "sdkb.log", "input")
            assert got["input"] == "in1" and json.loads(got["data"]) == {"from": "sdka"}
            assert got["messageId"] == "sdka-1" and got["properties"]["kind"] == "edge sdk"

            # a direct method from one SDK module to the other, through the gateway's HTTPS
            invoked = _wait_event(logs / "sdkb.log", "invoked")["answer"]
            assert invoked == {"status": 200, "payload": {"pong": {"n": 1}, "by": "sdka"}}
            assert _wait_event(logs / "sdka.log", "method")["name"] == "ping"

            # and to $upstream: the hub stored it as the module's message
            assert wait_until(
                lambda: any(m["messageId"] == "sdka-1" for m in _stored(hub, device)), 60
            )
            (stored,) = [m for m in _stored(hub, device) if m["messageId"] == "sdka-1"]
            assert json.loads(stored["body"]) == {"from": "sdka"}
            assert stored["properties"]["kind"] == "edge sdk"

            # each module patched its own module twin at the hub
            for module_id in ("sdka", "sdkb"):
                assert wait_until(
                    lambda m=module_id: (
                        api.get_twin(device, m)["properties"]["reported"].get("sdkModule") == m
                    ),
                    60,
                )

            # a desired patch made at the hub reaches that module only
            patched = api.patch_twin(device, {"properties": {"desired": {"rate": 3}}}, "sdka")
            version = patched["properties"]["desired"]["$version"]
            desired = _wait_event(logs / "sdka.log", "desired")["patch"]
            assert desired["rate"] == 3 and desired["$version"] == version
            assert wait_until(
                lambda: (
                    api.get_twin(device, "sdka")["properties"]["reported"].get("seenDesired")
                    == version
                ),
                60,
            )
            assert not [e for e in _events(logs / "sdkb.log") if e["event"] == "desired"]

            # the hub link goes down: routing between the modules goes on, upstream waits
            proxies[0].cut()
            burst.touch()
            _wait_event(logs / "sdka.log", "burst")
            assert wait_until(lambda: len(_inputs(logs / "sdkb.log")) == 4, 60)
            assert _inputs(logs / "sdkb.log") == ["sdka-1", "sdka-2", "sdka-3", "sdka-4"]
            assert not {"sdka-2", "sdka-3", "sdka-4"} & _stored_ids(hub, device)
            proxies[0].restore()
            assert wait_until(lambda: len(_stored_ids(hub, device)) == 4, 90)
            assert _stored_ids(hub, device) == {"sdka-1", "sdka-2", "sdka-3", "sdka-4"}
        finally:
            agent.stop()
            api.close()
            for proxy in proxies:
                proxy.close()


def _container(image: str, args: list[str], network: str | None) -> dict[str, Any]:
    """The SDK driver in a busybox container with the host's Python and the SDK's virtualenv
    mounted read-only; ``network``: its NetworkMode (None: docker's default bridge)."""
    python = Path(os.path.realpath(sdk_python()))
    mounts = {"/usr", "/usr/lib:/lib", "/usr/lib64:/lib64", str(python.parents[1])}
    mounts |= {str(sdk_python().parents[1]), str(DRIVER.parent)}
    binds = [m if ":" in m else f"{m}:{m}" for m in sorted(mounts)]
    host: dict[str, Any] = {"Binds": [f"{b}:ro" for b in binds]}
    if network is not None:
        host["NetworkMode"] = network
    options = {"Cmd": [str(sdk_python()), str(DRIVER), *args], "HostConfig": host}
    return {
        "type": "docker",
        "status": "running",
        "restartPolicy": "always",
        "settings": {"image": image, "createOptions": json.dumps(options)},
    }


def _container_logs(device: str) -> str:
    client = docker_client()
    try:
        out = []
        for c in client.api.containers(all=True, filters={"label": f"{LABEL_AGENT}={device}"}):
            logs = client.api.logs(c["Id"], tail=20).decode(errors="replace")
            out.append(f"--- {c['Names']}:\n{logs}")
        return "\n".join(out)
    finally:
        client.close()


def test_iot_edge_modules_on_the_sdk_run_in_containers_on_bridge_networks(short_tmp: Path) -> None:
    """The same SDK module in containers (busybox image; the host's Python and the SDK's
    virtualenv mounted read-only): on a user bridge network the test makes, on docker's default
    bridge and on the host's network, each with its own workload socket mounted by the agent.
    On a bridge each reaches the edge hub at its network's gateway address; their outputs are
    routed to a process module's inputs, and one calls a method of the process module through
    the gateway's HTTPS listener there. No hub: the agent runs standalone."""
    device = f"edge-ctr-{uuid.uuid4().hex[:6]}"
    run = uuid.uuid4().hex[:8]
    image = build_busybox_image(f"edgefleet-test-sdk:{run}", run_label=run)
    client = docker_client()
    network = client.networks.create(
        f"edgefleet-test-{run}", driver="bridge", labels={TEST_LABEL: run}
    )
    modules = {
        "sdkc": _container(
            image, ["--send", "out1", "--no-twin", "--invoke", "sdkb"], network.name
        ),
        "sdkd": _container(image, ["--send", "out1", "--no-twin"], None),
        "sdkh": _container(image, ["--send", "out1", "--no-twin"], "host"),
        "sdkb": _module("--no-twin"),
    }
    routes = {
        f"to{m}": f'FROM /messages/modules/{m}/* INTO BrokeredEndpoint("/modules/sdkb/inputs/{m}")'
        for m in ("sdkc", "sdkd", "sdkh")
    }
    loopback = free_loopback(IOTHUB_PORT)
    agent = AgentProcess(
        short_tmp / "agent",
        device,
        "auto",
        runtime={"type": "auto", "docker": {"name_prefix": f"{device}-"}},
        edge_hub=True,
        edge_hub_gateway_host=loopback,
    )
    agent.deploy(manifest(modules, routes=routes))
    agent.start()
    sdkb_log = agent.data_dir / "logs" / "sdkb.log"
    sockets = agent.data_dir / "edgehub" / "run" / "modules"

    def got() -> dict[str, dict[str, Any]]:
        return {e["input"]: e for e in _events(sdkb_log) if e["event"] == "input"}

    def env_of(module_id: str) -> dict[str, str]:
        info = client.api.inspect_container(f"{device}-{module_id}")
        return dict(e.split("=", 1) for e in info["Config"]["Env"])

    try:
        if not wait_until(lambda: len(got()) == 3, 90):
            raise AssertionError(f"inputs {sorted(got())}\n{_container_logs(device)}")
        for m in ("sdkc", "sdkd", "sdkh"):
            assert json.loads(got()[m]["data"]) == {"from": m} and got()[m]["messageId"] == f"{m}-1"
        # the method call from the user network's container, through its gateway's HTTPS
        method = _wait_event(sdkb_log, "method")
        assert method == {"event": "method", "name": "ping", "payload": {"n": 1}}

        # each container on a bridge was given its network's gateway, the one on the host's
        # network the loopback address that process modules get; each its own socket
        gateways = {}
        for m, net in (("sdkc", network.name), ("sdkd", "bridge")):
            gateways[m] = client.api.inspect_network(net)["IPAM"]["Config"][0]["Gateway"]
            env = env_of(m)
            assert env["IOTEDGE_GATEWAYHOSTNAME"] == env["IOTEDGE_EDGEHUBHOST"] == gateways[m]
            assert f"GatewayHostName={gateways[m]};" in env["EdgeHubConnectionString"]
        assert gateways["sdkc"] != gateways["sdkd"]
        assert env_of("sdkh")["IOTEDGE_GATEWAYHOSTNAME"] == loopback
        for m in ("sdkc", "sdkd", "sdkh"):
            assert env_of(m)["IOTEDGE_WORKLOADURI"] == "unix:///var/run/iotedge/workload.sock"
            binds = client.api.inspect_container(f"{device}-{m}")["HostConfig"]["Binds"]
            assert f"{sockets / m}:/var/run/iotedge" in binds
        assert {p.name for p in sockets.iterdir()} == {"sdkb", "sdkc", "sdkd", "sdkh"}

        # a module taken out of the deployment loses its workload socket
        agent.deploy(manifest({m: modules[m] for m in ("sdkc", "sdkb")}, routes={}))
        assert wait_until(lambda: {p.name for p in sockets.iterdir()} == {"sdkb", "sdkc"}, 30)
        assert (sockets / "sdkc" / "workload.sock").exists()

        # an agent restart: the container runs on (its env unchanged) and its mounted socket
        # directory serves again; there it signs for itself only
        container_id = client.api.inspect_container(f"{device}-sdkc")["Id"]
        assert agent.stop() == 0
        assert not (sockets / "sdkc" / "workload.sock").exists()
        (agent.data_dir / "reported.json").unlink()  # what follows waits for the new agent's
        agent.start()
        agent.wait_status("sdkc", "running")
        assert (sockets / "sdkc" / "workload.sock").exists()
        assert client.api.inspect_container(f"{device}-sdkc")["Id"] == container_id
        run_sign = client.api.exec_create(f"{device}-sdkc", [str(sdk_python()), "-c", SIGN])
        out, err = client.api.exec_start(run_sign["Id"], demux=True)
        answers = json.loads(out or b"null")
        assert isinstance(answers, list), err
        creds = json.loads((agent.data_dir / "edgehub" / "credentials.json").read_text())
        key = base64.b64decode(creds["sdkc"]["key"])
        digest = base64.b64encode(hmac.new(key, b"hi", hashlib.sha256).digest()).decode()
        assert answers[0] == [200, {"digest": digest}]
        assert answers[1] == [403, {"message": "module 'sdkc' may not sign for module 'sdkb'"}]
    finally:
        agent.stop()
        cleanup_label(LABEL_AGENT, device)
        cleanup_label(TEST_LABEL, run)
        network.remove()
        client.close()
