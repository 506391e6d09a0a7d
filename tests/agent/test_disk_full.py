"""An edge agent whose data directory (a 24 MiB tmpfs the test mounts) fills up, against a real
hub: it keeps running, reports the condition in the ``$edgeAgent`` reported properties at the hub,
its edge hub refuses a module's messages with a clear error, it starts again on the full disk,
and when space returns it reports so and delivers everything it had accepted (needs root)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud_hub.client_cli.agent_config import fetch_agent_config
from composition.chaos.agents import deployment, fill
from composition.chaos.fleet import read_accepted
from composition.chaos.hubstore import StoredMessages
from tests.agent.test_hub_e2e import wait_hub
from tests.support.agent import AgentProcess
from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import wait_until
from tests.support.tmpfs import small_tmpfs


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """One hub for the tests of this file (each has a device of its own)."""
    with running_hub(tmp_path_factory.mktemp("hub")) as running:
        yield running


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "agent" / "data", "24m") as data:
        yield data


def edge_agent(hub: RunningHub, workdir: Path, device: str) -> AgentProcess:
    """An agent configured as ``edgefleet device agent-config`` would (the hub's CA inline)."""
    agent = AgentProcess(workdir, device, "process")
    with hub.client() as client:
        client.create_device(device, {"capabilities": {"iotEdge": True}})
        created = fetch_agent_config(client, device)
    config = {
        **created,
        "data_dir": str(agent.data_dir),
        "runtime": {"type": "process"},
        "reconcile": {"interval_secs": 0.5, "backoff_base_secs": 0.5, "backoff_max_secs": 2,
                      "report_debounce_secs": 0.1, "stop_timeout_secs": 2},
        "edge_hub": True,
        "log_level": "info",
    }  # fmt: skip
    agent.config_path.write_text(yaml.safe_dump(config))
    return agent


def storage(rep: dict[str, Any]) -> dict[str, Any]:
    return dict(rep.get("storage") or {})


def load_running(rep: dict[str, Any]) -> bool:
    return bool(rep["modules"]["load"]["runtimeStatus"] == "running")


def test_full_disk_is_reported_refused_survived_at_start_and_recovered(
    tmp_path: Path, small_disk: Path, hub: RunningHub
) -> None:
    device = f"edge-{uuid.uuid4().hex[:6]}"
    module_dir = tmp_path / "load"  # the module's own log of accepted messages: not on the tmpfs
    accepted = module_dir / "accepted.log"
    agent = edge_agent(hub, tmp_path / "agent", device)
    with hub.client() as client:
        client.apply_configuration_content(device, deployment(module_dir, rate=50))
    agent.start()
    try:
        rep = wait_hub(hub, device, "running, space", lambda r: load_running(r))
        assert storage(rep)["state"] == "ok" and storage(rep)["freeBytes"] > 0
        assert storage(rep)["dataDir"] == str(small_disk)
        assert wait_until(lambda: len(read_accepted(accepted)) >= 20, timeout=60)

        # the disk fills while the agent runs
        fill(small_disk)
        rep = wait_hub(hub, device, "full", lambda r: "upstreamMessages" in storage(r)["refusing"])
        full = storage(rep)
        assert full["state"] == "full" and full["freeBytes"] < 1 << 20
        assert "edgeHubStore" in full["failedWrites"] and "full" in full["lastError"]
        cli = [sys.executable, "-m", "composition.cli", "twin", "show", device]
        cli += ["--module", "$edgeAgent", "--json"]
        shown = subprocess.run(cli, env=hub.cli_env(), capture_output=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        twin = json.loads(shown.stdout)
        assert twin["properties"]["reported"]["storage"]["state"] == "full"
        # the module sees why: the edge hub's refusal, not a timeout
        failures = module_dir / "failures"
        refusal = "MessageRefusedError: load: 1 of 1 message(s) refused (507): edge hub storage"
        assert wait_until(lambda: refusal in failures.read_text(), timeout=30)
        before_restart = len(read_accepted(accepted))

        # the agent stops and starts again on the full disk
        started = rep["systemModules"]["edgeAgent"]["lastStartTimeUtc"]
        assert agent.stop() == 0
        agent.start()
        rep = wait_hub(
            hub,
            device,
            "restarted on a full disk",
            lambda r: (
                r["systemModules"]["edgeAgent"]["lastStartTimeUtc"] != started
                and load_running(r)
                and storage(r)["state"] == "full"
            ),
        )
        assert agent.proc is not None and agent.proc.poll() is None

        # space returns: reported, and the refused messages go through
        (small_disk / "filler").unlink()
        rep = wait_hub(hub, device, "space again", lambda r: storage(r)["state"] == "ok")
        assert storage(rep)["refusing"] == [] and storage(rep)["freeBytes"] > 1 << 20
        assert wait_until(lambda: len(read_accepted(accepted)) > before_restart + 20, 60)
        (module_dir / "stop").touch()
        assert wait_until(lambda: (module_dir / "done").exists(), timeout=30)
        sent = read_accepted(accepted)
        store = StoredMessages(hub.data_dir / "hub.db")
        assert wait_until(lambda: len(_seqs(store, device)) >= len(set(sent)), timeout=60)
        stored = _seqs(store, device)
        assert set(sent) <= set(stored)  # nothing lost
        assert len(stored) == len(set(stored))  # nothing twice
        assert _integrity(small_disk / "edgehub" / "store.db") == "ok"
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop()


def test_a_new_device_whose_disk_is_full_before_its_first_start_reports_it_then_works(
    tmp_path: Path, small_disk: Path, hub: RunningHub
) -> None:
    """Nothing in the data directory yet (no outbox, no store, no saved deployment) and no room:
    the agent starts, the hub shows ``storage`` ``full``, and once there is space the deployment
    is saved and applied and the module's messages reach the hub."""
    device = f"edge-{uuid.uuid4().hex[:6]}"
    module_dir = tmp_path / "load"
    accepted = module_dir / "accepted.log"
    agent = edge_agent(hub, tmp_path / "agent", device)
    with hub.client() as client:
        client.apply_configuration_content(device, deployment(module_dir, rate=50))
    fill(small_disk)
    agent.start()
    try:
        rep = wait_hub(hub, device, "full at the first start", lambda r: _full(storage(r)))
        assert agent.proc is not None and agent.proc.poll() is None
        # the deployment could not be saved: refused (500) until there is space
        assert rep["lastDesiredStatus"]["code"] == 500
        (small_disk / "filler").unlink()
        rep = wait_hub(
            hub,
            device,
            "space, deployment applied",
            lambda r: storage(r)["state"] == "ok" and load_running(r),
        )
        assert rep["lastDesiredStatus"]["code"] == 200
        assert wait_until(lambda: len(read_accepted(accepted)) >= 20, timeout=60)
        (module_dir / "stop").touch()
        assert wait_until(lambda: (module_dir / "done").exists(), timeout=30)
        sent = set(read_accepted(accepted))
        store = StoredMessages(hub.data_dir / "hub.db")
        assert wait_until(lambda: sent <= set(_seqs(store, device)), timeout=60)
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop()


def _full(state: dict[str, Any]) -> bool:
    return state.get("state") == "full" and state["freeBytes"] < 1 << 20


def _seqs(store: StoredMessages, device: str) -> list[int]:
    """The sequence numbers the hub stored for ``device``'s load module, in storage order."""
    store.poll()
    return [seq for source, seq in store.rows if source == f"{device}/load"]


def _integrity(db: Path) -> str:
    code = "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])"  # noqa: E501
    out = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True)
    return out.stdout.strip() or json.dumps(out.stderr)
