"""An agent restarted with a saved deployment: a module that outlived the old agent (kill -9)
reconnects as soon as the new edge hub listens, and what it sends then is stored for upstream,
not acknowledged and dropped for want of routes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent
from edge_agent.assembly import build_agent
from edge_agent.config import AgentConfig
from edge_agent.deployment_file import DeploymentStore
from edge_agent.edgehub.credentials import ModuleCredentials
from edge_agent.edgehub.forwarder import Forwarder
from edgefleet import protocol as p
from edgefleet.manifest import edge_deployment, process_module
from edgefleet.sdk.module_client import ModuleClient
from tests.support.hub import free_port

DEVICE = "restarted-device"
MODULE = "sensor"


def _desired(doc: dict[str, Any], name: str) -> dict[str, Any]:
    desired: dict[str, Any] = doc["modulesContent"][name]["properties.desired"]
    return desired


@pytest.fixture
def saved_device(tmp_path: Path) -> AgentConfig:
    """The data directory an earlier agent left: its deployment (the module's output routed
    upstream), the module's key and the edge hub's port."""
    data = tmp_path / "data"
    module = process_module([sys.executable, "-c", "import time; time.sleep(60)"])
    routes = {"up": f"FROM /messages/modules/{MODULE}/outputs/* INTO $upstream"}
    doc = edge_deployment({MODULE: module}, routes)
    manifest = tmp_path / "deployment.json"
    manifest.write_text(json.dumps(doc))
    DeploymentStore(data).save(_desired(doc, "$edgeAgent"), _desired(doc, "$edgeHub"), 1)
    ModuleCredentials(data / "edgehub" / "credentials.json").issue(MODULE)
    return AgentConfig.model_validate(
        {
            "provisioning": {"source": "local", "manifest": str(manifest), "device_id": DEVICE},
            "data_dir": str(data),
            "runtime": {"type": "process"},
            "edge_hub_port": free_port(),
            "edge_hub_gateway_host": None,
        }
    )


@pytest.fixture
def agent_sending_at_listen(
    saved_device: AgentConfig, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Agent, list[str]]]:
    """The agent, started while the surviving module sends one message the moment the edge
    hub's listener accepts connections (before the hub's start has returned)."""
    key = ModuleCredentials(saved_device.data_dir / "edgehub" / "credentials.json").get(MODULE)
    assert key is not None
    sent: list[str] = []
    start_forwarding = Forwarder.start

    def send_then_start(forwarder: Forwarder) -> None:
        client = ModuleClient(DEVICE, MODULE, "127.0.0.1", saved_device.edge_hub_port, key)
        client.connect(timeout=10)
        try:
            msg = p.Message.from_body({"n": 1}, message_id="m1")
            sent.append(client.send_message_to_output(msg, "out", timeout=10))
        finally:
            client.shutdown()
        start_forwarding(forwarder)

    monkeypatch.setattr(Forwarder, "start", send_then_start)
    agent = build_agent(saved_device)
    try:
        agent.start()
        yield agent, sent
    finally:
        agent.stop(stop_modules=True)


def test_a_message_sent_as_the_restarted_edge_hub_opens_is_stored_not_dropped(
    agent_sending_at_listen: tuple[Agent, list[str]],
) -> None:
    agent, sent = agent_sending_at_listen
    assert sent == ["m1"]  # the edge hub acknowledged it
    hub: Any = agent.edge_hub
    stats = hub.stats()
    assert stats["unroutedMessages"] == 0
    assert stats["receivedMessages"] == 1 and stats["queuedMessages"] == 1  # no upstream here
