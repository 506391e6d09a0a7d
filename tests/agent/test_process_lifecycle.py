"""The agent daemon with the process runtime: the full module lifecycle, crashes and restarts."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import AgentProcess, manifest, procs_with


def looping(marker: str, text: str = "tick") -> dict[str, Any]:
    # sh's $0 carries the marker, so the test can count the module's processes
    return {
        "command": [
            "sh",
            "-c",
            f"while :; do echo {text} $IOTEDGE_MODULEID $GREETING; sleep 0.2; done",
            marker,
        ],
    }


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path, f"dev-{uuid.uuid4().hex[:8]}", "process")
    yield a
    if a.proc is not None and a.proc.poll() is None:
        a.stop()
    for pid in procs_with(str(tmp_path)):
        os.kill(pid, signal.SIGKILL)


def test_deploy_update_remove(agent: AgentProcess, tmp_path: Path) -> None:
    ma, mb = f"{tmp_path}/module-a", f"{tmp_path}/module-b"
    mods = {
        "a": {
            "type": "process",
            "startupOrder": 1,
            "settings": looping(ma),
            "env": {"GREETING": {"value": "hello"}},
        },
        "b": {"type": "process", "startupOrder": 0, "settings": looping(mb)},
    }
    agent.deploy(manifest(mods))
    agent.start()
    a = agent.wait_status("a", "running")
    agent.wait_status("b", "running")
    rep = agent.reported()
    assert rep["lastDesiredStatus"]["code"] == 200
    assert rep["runtime"]["platform"]["os"] == "linux"
    assert a["lastStartTimeUtc"].endswith("Z") and a["settings"]["imageHash"].startswith("sha256:")
    b = agent.module("b")
    assert b["lastStartTimeUtc"] <= a["lastStartTimeUtc"]  # startupOrder 0 before 1
    pid_a, pid_b = procs_with(ma), procs_with(mb)
    assert len(pid_a) == 1 and len(pid_b) == 1
    # module env and identity env reach the process; output lands in the module log
    deadline = time.monotonic() + 30
    log = tmp_path / "data" / "logs" / "a.log"
    while time.monotonic() < deadline and "tick a hello" not in (
        log.read_text() if log.exists() else ""
    ):
        time.sleep(0.1)
    assert "tick a hello" in log.read_text()

    # version change recreates a; b is untouched
    mods["a"]["version"] = "2.0"
    agent.deploy(manifest(mods))
    agent.wait_for(
        "a v2",
        lambda r: (
            r["modules"]["a"]["version"] == "2.0"
            and r["modules"]["a"]["runtimeStatus"] == "running"
        ),
    )
    assert procs_with(ma) != pid_a and len(procs_with(ma)) == 1
    assert procs_with(mb) == pid_b

    # status stopped stops it; removing b removes its process and its reported entry
    mods["a"]["status"] = "stopped"
    del mods["b"]
    agent.deploy(manifest(mods))
    agent.wait_status("a", "stopped")
    agent.wait_for("b removed", lambda r: "b" not in r["modules"])
    assert procs_with(ma) == [] and procs_with(mb) == []

    # a malformed deployment is rejected with a path; what runs keeps running
    mods["a"]["status"] = "running"
    agent.deploy(manifest(mods))
    agent.wait_status("a", "running")
    bad = manifest({"a": {**mods["a"], "restartPolicy": "sometimes"}})
    agent.deploy(bad)
    rep = agent.wait_for("400", lambda r: r["lastDesiredStatus"]["code"] == 400)
    assert "modules.a.restartPolicy" in rep["lastDesiredStatus"]["description"]
    assert len(procs_with(ma)) == 1
    assert (agent.data_dir / "deployment.json").stat().st_mode & 0o077 == 0  # owner-only
    assert agent.stop() == 0
    assert procs_with(ma) == []  # processes are stopped with the agent


def test_crash_backoff_then_failed_and_bad_command(agent: AgentProcess, tmp_path: Path) -> None:
    mods = {
        "crash": {
            "type": "process",
            "restartPolicy": "on-failure",
            "settings": {"command": "sh -c 'echo boom; exit 3'"},
        },
        "clean": {
            "type": "process",
            "restartPolicy": "on-failure",
            "settings": {"command": "sh -c 'exit 0'"},
        },
        "missing": {"type": "process", "settings": {"command": "/nonexistent/binary --x"}},
        "ok": {"type": "process", "settings": looping(f"{tmp_path}/module-ok")},
    }
    agent.deploy(manifest(mods))
    agent.start()
    seen: set[str] = set()

    def crash_progress(r: dict[str, Any]) -> bool:
        seen.add(r["modules"]["crash"]["runtimeStatus"])
        return r["modules"]["crash"]["runtimeStatus"] == "failed"

    rep = agent.wait_for("crash failed", crash_progress)
    crash = rep["modules"]["crash"]
    assert "backoff" in seen
    assert crash["restartCount"] == 3 and crash["exitCode"] == 3
    assert "gave up after 3 restarts" in crash["statusDescription"]
    assert "lastRestartTimeUtc" in crash and "lastExitTimeUtc" in crash
    clean = agent.wait_status("clean", "stopped")
    assert clean["exitCode"] == 0 and clean["restartCount"] == 0
    missing = agent.wait_status("missing", "failed")
    assert "command not found" in missing["statusDescription"]
    assert agent.module("ok")["runtimeStatus"] == "running"


def test_kill9_mid_deployment_and_reboot_without_hub(agent: AgentProcess, tmp_path: Path) -> None:
    markers = {f"m{i}": f"{tmp_path}/module-m{i}" for i in range(4)}
    mods = {
        n: {"type": "process", "startupOrder": i, "settings": looping(m)}
        for i, (n, m) in enumerate(markers.items())
    }
    agent.deploy(manifest(mods))
    agent.start()
    agent.wait_status("m0", "running")
    agent.kill9()  # mid-deployment: later startupOrder groups may not have started yet
    agent.start()
    for n in markers:
        agent.wait_status(n, "running")
    time.sleep(1.5)  # several reconcile passes: still exactly one process per module
    for m in markers.values():
        assert len(procs_with(m)) == 1, m
    # reboot without the hub: the deployment source is gone, the persisted one is used
    assert agent.stop() == 0
    assert all(procs_with(m) == [] for m in markers.values())
    (tmp_path / "reported.json").unlink(missing_ok=True)
    (agent.data_dir / "reported.json").unlink()
    agent.manifest_path.unlink()
    agent.start()
    for n in markers:
        agent.wait_status(n, "running")
    for m in markers.values():
        assert len(procs_with(m)) == 1


def test_restart_counter_resets_after_healthy_time(tmp_path: Path) -> None:
    agent = AgentProcess(
        tmp_path,
        f"dev-{uuid.uuid4().hex[:8]}",
        "process",
        # 3 s healthy before the reset: restartCount 2 stays visible long enough to be polled
        reconcile={"healthy_reset_secs": 3, "max_restarts": 10},
    )
    marker = f"{tmp_path}/module-flappy"
    # crashes on its first two runs, then stays up
    script = (
        "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; "
        "[ $n -ge 3 ] && exec sleep 100; exit 1"
    )
    mods = {
        "flappy": {
            "type": "process",
            "restartPolicy": "on-failure",
            "settings": {"command": ["sh", "-c", script, marker], "workingDir": str(tmp_path)},
        }
    }
    agent.deploy(manifest(mods))
    agent.start()
    try:
        agent.wait_for("2 restarts", lambda r: r["modules"]["flappy"]["restartCount"] == 2)
        agent.wait_for(
            "counter reset",
            lambda r: (
                r["modules"]["flappy"]["restartCount"] == 0
                and r["modules"]["flappy"]["runtimeStatus"] == "running"
            ),
        )
        assert (tmp_path / "count").read_text().strip() == "3"
    finally:
        agent.stop()


def test_process_health_check_on_unhealthy(agent: AgentProcess, tmp_path: Path) -> None:
    # healthy for about a second after each start, then the health file disappears
    script = "touch healthy; sleep 1; rm -f healthy; sleep 1000"
    mods = {
        "sick": {
            "type": "process",
            "restartPolicy": "on-unhealthy",
            "settings": {
                "command": ["sh", "-c", script, f"{tmp_path}/module-sick"],
                "workingDir": str(tmp_path),
                "healthCheck": {"command": "test -f healthy", "intervalSecs": 0.2, "retries": 2},
            },
        },
        "fine": {
            "type": "process",
            "restartPolicy": "on-unhealthy",
            "settings": {
                "command": ["sh", "-c", "sleep 1000", f"{tmp_path}/module-fine"],
                "healthCheck": {"command": ["true"], "intervalSecs": 0.2},
            },
        },
    }
    agent.deploy(manifest(mods))
    agent.start()
    # the process never exits by itself: only the failed health check can restart it
    agent.wait_for("sick restarted", lambda r: r["modules"]["sick"]["restartCount"] >= 1)
    fine = agent.module("fine")
    assert fine["runtimeStatus"] == "running" and fine["restartCount"] == 0
