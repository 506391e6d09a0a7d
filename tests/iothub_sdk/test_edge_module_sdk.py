"""An IoT Edge module on Microsoft's unmodified device SDK (``create_from_edge_environment``, from
the SDK's own virtualenv), run by the agent as a process against a real hub: the workload API,
the edge hub's TLS listener in IoT Hub's module dialect, routes to another SDK module's input and
to ``$upstream``, the module twin and a desired patch; then an outage of the hub link, through
which module-to-module routing goes on and the upstream messages wait in the edge hub's store."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from composition.processes import free_loopback
from edge_agent.runtime.docker import LABEL_AGENT
from tests.support.agent import AgentProcess, hub_agent, manifest
from tests.support.device_sdk import IOTHUB_PORT, sdk_python
from tests.support.docker import TEST_LABEL, build_busybox_image, cleanup_label
from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import wait_until
from tests.support.tcpproxy import TcpProxy

DRIVER = Path(__file__).parent / "edge_module_driver.py"


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


def test_an_iot_edge_module_on_the_sdk_runs_under_the_agent(tmp_path: Path) -> None:
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

        agent = hub_agent(hub, tmp_path / "agent", device, relay, edge_hub_gateway_host=gateway)
        agent.start()
        logs = agent.data_dir / "logs"
        try:
            _wait_event(logs / "sdka.log", "connected")
            assert _wait_event(logs / "sdka.log", "sent")["output"] == "out1"
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


def test_an_iot_edge_module_on_the_sdk_runs_in_a_container(tmp_path: Path) -> None:
    """The same SDK module in a container (busybox image; the host's Python and the SDK's
    virtualenv mounted read-only, host networking): the workload socket mounted by the agent,
    its output routed to a process module's input. No hub: the agent runs standalone."""
    device = f"edge-ctr-{uuid.uuid4().hex[:6]}"
    run = uuid.uuid4().hex[:8]
    image = build_busybox_image(f"edgefleet-test-sdk:{run}", run_label=run)
    python = Path(os.path.realpath(sdk_python()))
    mounts = {"/usr", "/usr/lib:/lib", "/usr/lib64:/lib64", str(python.parents[1])}
    mounts |= {str(sdk_python().parents[1]), str(DRIVER.parent)}
    binds = [m if ":" in m else f"{m}:{m}" for m in sorted(mounts)]
    options = {
        "Cmd": [str(sdk_python()), str(DRIVER), "--send", "out1", "--no-twin"],
        "HostConfig": {"NetworkMode": "host", "Binds": [f"{b}:ro" for b in binds]},
    }
    container = {
        "type": "docker",
        "status": "running",
        "restartPolicy": "always",
        "settings": {"image": image, "createOptions": json.dumps(options)},
    }
    routes = {
        "toB": 'FROM /messages/modules/sdkc/* INTO BrokeredEndpoint("/modules/sdkb/inputs/i")'
    }
    agent = AgentProcess(
        tmp_path / "agent",
        device,
        "auto",
        runtime={"type": "auto", "docker": {"name_prefix": f"{device}-"}},
        edge_hub=True,
        edge_hub_gateway_host=free_loopback(IOTHUB_PORT),
    )
    agent.deploy(manifest({"sdkc": container, "sdkb": _module("--no-twin")}, routes=routes))
    agent.start()
    try:
        got = _wait_event(agent.data_dir / "logs" / "sdkb.log", "input")
        assert got["input"] == "i" and json.loads(got["data"]) == {"from": "sdkc"}
        assert got["messageId"] == "sdkc-1"
    finally:
        agent.stop()
        cleanup_label(LABEL_AGENT, device)
        cleanup_label(TEST_LABEL, run)
