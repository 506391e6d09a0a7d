"""Restart-policy state survives an agent crash: ``failed`` stays failed, backoff goes on from
its count, a new version starts afresh, a corrupt state file is survived (process runtime)."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import AgentProcess, manifest, procs_with
from tests.support.mqtt import wait_until


def crasher(tmp_path: Path, name: str, code: int = 3) -> dict[str, Any]:
    """A module that logs each of its runs to ``runs-<name>`` and exits with ``code``."""
    return {
        "type": "process",
        "restartPolicy": "on-failure",
        "settings": {
            "command": [
                "sh",
                "-c",
                f"echo run >> runs-{name}; exit {code}",
                f"{tmp_path}/m-{name}",
            ],
            "workingDir": str(tmp_path),
        },
    }


def looping(tmp_path: Path, name: str) -> dict[str, Any]:
    return {
        "type": "process",
        "settings": {
            "command": ["sh", "-c", "while :; do sleep 0.2; done", f"{tmp_path}/m-{name}"]
        },
    }


def runs(tmp_path: Path, name: str) -> int:
    try:
        return len((tmp_path / f"runs-{name}").read_text().splitlines())
    except OSError:
        return 0


def saved(agent: AgentProcess) -> dict[str, Any]:
    try:
        data = json.loads((agent.data_dir / "restart-state.json").read_text())
    except (OSError, ValueError):
        return {}
    return dict(data.get("modules", {})) if isinstance(data, dict) else {}


def mod(r: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(r.get("modules", {}).get(name) or {})


def kill9_in_backoff(agent: AgentProcess, name: str, min_restarts: int) -> dict[str, Any]:
    """SIGKILL the agent while ``name`` waits in backoff; returns the state it had saved.

    The agent is frozen (SIGSTOP) to read its saved state: a restart between reading and
    killing is impossible, and a backoff that just ended is simply waited out once more."""
    assert agent.proc is not None
    for _ in range(5):

        def caught(r: dict[str, Any], least: int = min_restarts) -> bool:
            m = mod(r, name)
            return m.get("restartCount", 0) >= least and m.get("runtimeStatus") == "backoff"

        agent.wait_for(f"{name} in backoff after {min_restarts} restarts", caught)
        agent.proc.send_signal(signal.SIGSTOP)
        state = saved(agent).get(name, {})
        if state.get("status") == "backoff":
            agent.kill9()
            return state
        agent.proc.send_signal(signal.SIGCONT)
        min_restarts = state.get("restartCount", min_restarts) + 1
    raise AssertionError(f"{name} never caught in backoff")


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[Any]:
    agents: list[AgentProcess] = []

    def make(**reconcile: Any) -> AgentProcess:
        a = AgentProcess(tmp_path, f"dev-{uuid.uuid4().hex[:8]}", "process", reconcile=reconcile)
        agents.append(a)
        return a

    yield make
    for a in agents:
        if a.proc is not None and a.proc.poll() is None:
            a.stop()
    for pid in procs_with(str(tmp_path)):
        os.kill(pid, signal.SIGKILL)


def test_failed_module_stays_failed_after_agent_kill9(make_agent: Any, tmp_path: Path) -> None:
    agent = make_agent(backoff_base_secs=0.2, backoff_max_secs=1, max_restarts=3)
    mods = {"doomed": crasher(tmp_path, "doomed")}
    agent.deploy(manifest(mods))
    agent.start()
    before = agent.wait_status("doomed", "failed")
    assert before["restartCount"] == 3 and before["exitCode"] == 3
    assert wait_until(lambda: runs(tmp_path, "doomed") == 4)  # the first run and 3 restarts
    assert saved(agent)["doomed"]["status"] == "failed"

    agent.kill9()
    agent.start()
    after = agent.wait_status("doomed", "failed")
    assert after["restartCount"] == 3 and after["exitCode"] == 3
    assert after["lastRestartTimeUtc"] == before["lastRestartTimeUtc"]
    assert after["lastExitTimeUtc"] == before["lastExitTimeUtc"]
    assert "gave up after 3 restarts" in after["statusDescription"]
    # later passes (a deployment change adds a module) do not revive it either
    mods["probe"] = looping(tmp_path, "probe")
    agent.deploy(manifest(mods))
    agent.wait_status("probe", "running")
    later = agent.module("doomed")
    assert later["runtimeStatus"] == "failed" and later["restartCount"] == 3
    assert runs(tmp_path, "doomed") == 4

    # a new version is a new module: its counter starts afresh
    mods["doomed"]["version"] = "2.0"
    agent.deploy(manifest(mods))
    agent.wait_for(
        "doomed v2 restarting",
        lambda r: (
            mod(r, "doomed").get("version") == "2.0"
            # seen restarting, or (a slow poll missed that ~1 s) failed again after new restarts
            and (
                mod(r, "doomed").get("runtimeStatus") != "failed"
                or mod(r, "doomed").get("lastRestartTimeUtc", "") > before["lastRestartTimeUtc"]
            )
        ),
    )
    assert wait_until(lambda: runs(tmp_path, "doomed") >= 5)


def test_backoff_continues_from_its_count_after_agent_kill9(
    make_agent: Any, tmp_path: Path
) -> None:
    # delays 0.5, 1, 2, 4 ... s: the module spends most of its time in backoff
    agent = make_agent(backoff_base_secs=0.5, backoff_max_secs=30, max_restarts=10)
    agent.deploy(manifest({"flaky": crasher(tmp_path, "flaky")}))
    agent.start()
    state = kill9_in_backoff(agent, "flaky", min_restarts=2)
    n = state["restartCount"]
    assert wait_until(lambda: runs(tmp_path, "flaky") == n + 1)

    agent.start()
    first = agent.wait_for("new agent reports flaky", lambda r: bool(mod(r, "flaky")))
    assert mod(first, "flaky")["restartCount"] >= n  # not back to 0
    rep = agent.wait_for(
        f"restart {n + 1}", lambda r: mod(r, "flaky").get("restartCount", 0) >= n + 1
    )
    flaky = mod(rep, "flaky")
    assert flaky["restartCount"] == n + 1
    assert flaky["lastRestartTimeUtc"] > state["lastRestartTimeUtc"]
    # the agent restart itself started nothing: one run per start, the first and n + 1 restarts
    assert wait_until(lambda: runs(tmp_path, "flaky") == n + 2)
    assert runs(tmp_path, "flaky") == n + 2


def test_corrupt_state_file_is_logged_and_ignored(make_agent: Any, tmp_path: Path) -> None:
    agent = make_agent()
    agent.data_dir.mkdir(parents=True, exist_ok=True)
    (agent.data_dir / "restart-state.json").write_bytes(b"\x00\xff{ half a json fi")
    agent.deploy(manifest({"steady": looping(tmp_path, "steady")}))
    agent.start()
    steady = agent.wait_status("steady", "running")
    assert steady["restartCount"] == 0
    assert "starting fresh" in agent.log_path.read_text()
    # the agent replaced the bad file with its own state
    assert wait_until(lambda: saved(agent).get("steady", {}).get("status") == "running")

    # an entry of the wrong shape costs only that module's saved state
    agent.stop()
    bad = {"version": 1, "modules": {"steady": {"restartCount": "many"}, "gone": 7}}
    (agent.data_dir / "restart-state.json").write_text(json.dumps(bad))
    (agent.data_dir / "reported.json").unlink(missing_ok=True)
    agent.start()
    assert agent.wait_status("steady", "running")["restartCount"] == 0
    assert "restart state of steady ignored" in agent.log_path.read_text()
    assert wait_until(lambda: "gone" not in saved(agent) and "steady" in saved(agent))
