"""The agent runs the edge hub and hands every module its env (identity, local broker)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import AgentProcess, manifest


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path, f"dev-{uuid.uuid4().hex[:8]}", "process", edge_hub=True)
    yield a
    if a.proc is not None and a.proc.poll() is None:
        a.stop()


def _env_line(log: Path, after: int = 0) -> re.Match[str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            text = log.read_text()
        except OSError:  # not written yet (or rotated away under us)
            text = ""
        found = list(re.finditer(r"port=(\d+) dev=(\S+) mod=(\S+) conn=(\S+)", text))
        if len(found) > after:
            return found[after]
        time.sleep(0.1)
    raise AssertionError(f"no env line in {log}")


def test_edge_hub_env_stable_across_restarts(agent: AgentProcess) -> None:
    cmd = (
        "echo port=$IOTEDGE_EDGEHUBPORT dev=$IOTEDGE_DEVICEID mod=$IOTEDGE_MODULEID"
        " conn=$EdgeHubConnectionString; sleep 100"
    )
    mods = {"sensor": {"type": "process", "settings": {"command": ["sh", "-c", cmd]}}}
    routes = {"up": {"route": "FROM /messages/modules/sensor/* INTO $upstream", "priority": 1}}
    agent.deploy(manifest(mods, routes=routes))
    agent.start()
    agent.wait_status("sensor", "running")
    rep = agent.wait_for(
        "edge hub running",
        lambda r: r["systemModules"]["edgeHub"]["runtimeStatus"] == "running",
    )
    assert rep["lastDesiredStatus"]["code"] == 200
    saf = rep["systemModules"]["edgeHub"]["storeAndForward"]  # the edge hub's queue counters
    assert saf["queuedMessages"] == 0 and "evictedMessages" in saf
    assert saf["maxBytes"] == 1 << 30  # the agent's default cap
    log = agent.data_dir / "logs" / "sensor.log"
    first = _env_line(log)
    assert first.group(2) == agent.device_id and first.group(3) == "sensor"
    assert "ModuleId=sensor;SharedAccessKey=" in first.group(4)
    # IoT Hub's SDKs refuse a Port= key: they reach the gateway's TLS listener on 8883
    assert "Port=" not in first.group(4) and "GatewayHostName=127.0.0.2;" in first.group(4)
    # after an agent restart the module gets the same port and credentials
    assert agent.stop() == 0
    agent.start()
    second = _env_line(log, after=1)
    assert second.group(1) == first.group(1) and second.group(4) == first.group(4)
    # a route the edge hub cannot compile rejects the deployment (400) and keeps the old one
    agent.deploy(manifest(mods, routes={"bad": "FROM /messages/* WHERE INTO $upstream"}))
    rep = agent.wait_for("400", lambda r: r["lastDesiredStatus"]["code"] == 400)
    assert "routes" in rep["lastDesiredStatus"]["description"]
    assert agent.module("sensor")["runtimeStatus"] == "running"
