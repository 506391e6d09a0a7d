"""``edgefleet bench agent``: the agent's idle memory and its deployment latency.

For each runtime (process; docker when an engine answers) it starts a real agent in standalone
mode, deploys N modules and measures the time from the desired change (the manifest write) to
all N modules running, as observed on the host (processes / containers), and to the reported
properties saying so. The baseline starts the same N modules directly (``subprocess.Popen`` /
docker create+start) in the same run; ratios are agent time / baseline time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from composition.processes import Child
from edgefleet.files import atomic_write_json

BUSYBOX = "/bin/busybox"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wait(check: Callable[[], bool], timeout: float = 120) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if check():
            return time.perf_counter() - t0
        time.sleep(0.01)
    raise TimeoutError("condition not reached")


def _marker_pids(marker: str) -> int:
    n = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    n += 1
            except OSError:
                pass
    return n


def _write_manifest(path: Path, modules: dict[str, Any]) -> None:
    """Replace the deployment the agent watches (the agent reads it as the desired state)."""
    atomic_write_json(path, _manifest(modules), mode=0o644)


def _manifest(modules: dict[str, Any]) -> dict[str, Any]:
    return {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "runtime": {"type": "docker", "settings": {}},
                    "systemModules": {"edgeAgent": {"type": "docker", "settings": {}}},
                    "modules": modules,
                }
            }
        }
    }


class _Agent:
    def __init__(self, root: Path, runtime: str, extra: dict[str, Any], edge_hub: bool) -> None:
        self.root = root
        self.manifest = root / "deployment.json"
        self.data = root / "data"
        cfg = {
            "provisioning": {"source": "local", "manifest": str(self.manifest)},
            "data_dir": str(self.data),
            "runtime": {"type": runtime, **extra},
            "reconcile": {"report_debounce_secs": 0.05, "stop_timeout_secs": 1},
            "edge_hub": edge_hub,
            "log_level": "warning",
        }
        (root / "agent.json").write_text(json.dumps(cfg))
        _write_manifest(self.manifest, {})
        self.child = Child(
            "agent",
            [sys.executable, "-m", "edge_agent", "--config", str(root / "agent.json")],
            log=root / "agent.log",
            stop_timeout=60,
        )

    def reported(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.data / "reported.json").read_text())
            return data
        except (OSError, ValueError):
            return {}

    def all_reported_running(self, n: int) -> bool:
        mods = self.reported().get("modules", {})
        return len(mods) == n and all(m.get("runtimeStatus") == "running" for m in mods.values())

    def stop(self) -> None:
        self.child.stop()


def bench_process(n: int, root: Path, edge_hub: bool = True) -> dict[str, Any]:
    marker = f"efbench-{uuid.uuid4().hex[:8]}"
    argv = ["sh", "-c", "while :; do sleep 1; done"]
    # baseline: the same N processes started directly
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen([*argv, f"{marker}-base-{i}"], start_new_session=True) for i in range(n)
    ]
    _wait(lambda: _marker_pids(f"{marker}-base-") >= n)
    baseline = time.perf_counter() - t0
    for p in procs:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    agent = _Agent(root, "process", {}, edge_hub)
    try:
        _wait(lambda: "lastDesiredStatus" in agent.reported())
        time.sleep(2)
        rss_empty = rss_mb(agent.child.pid)
        mods = {
            f"m{i}": {"type": "process", "settings": {"command": [*argv, f"{marker}-m{i}"]}}
            for i in range(n)
        }
        t0 = time.perf_counter()
        _write_manifest(agent.manifest, mods)
        running = _wait(lambda: _marker_pids(f"{marker}-m") >= n)
        reported = _wait(lambda: agent.all_reported_running(n)) + running
        time.sleep(3)
        rss_idle = rss_mb(agent.child.pid)
    finally:
        agent.stop()
    return _result("process", n, baseline, running, reported, rss_empty, rss_idle)


def _result(
    runtime: str,
    n: int,
    baseline: float,
    running: float,
    reported: float,
    empty: float,
    idle: float,
) -> dict[str, Any]:
    return {
        "runtime": runtime,
        "modules": n,
        "agent_rss_mb_no_modules": round(empty, 1),
        "agent_rss_mb_idle": round(idle, 1),
        "deploy_to_running_s": round(running, 3),
        "deploy_to_reported_s": round(reported, 3),
        "baseline_direct_start_s": round(baseline, 3),
        "ratio_running_vs_baseline": round(running / baseline, 2) if baseline else None,
    }


def _bench_image(client: Any) -> str:
    tag = "edgefleet-bench-busybox:1"
    try:
        client.api.inspect_image(tag)
        return tag
    except Exception:  # not built yet
        pass
    ctx = Path(tempfile.mkdtemp(prefix="efbench-img-"))
    try:
        (ctx / "bin").mkdir()
        shutil.copy2(BUSYBOX, ctx / "bin" / "busybox")
        for applet in ("sh", "sleep"):
            (ctx / "bin" / applet).symlink_to("busybox")
        (ctx / "Dockerfile").write_text(
            'FROM scratch\nCOPY bin /bin\nLABEL net.edgefleet.bench="1"\nCMD ["sleep", "100000"]\n'
        )
        client.images.build(path=str(ctx), tag=tag, rm=True)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return tag


def bench_docker(n: int, root: Path, edge_hub: bool = True) -> dict[str, Any]:
    import docker

    client = docker.from_env()
    image = _bench_image(client)
    run = uuid.uuid4().hex[:8]
    label = f"net.edgefleet.bench={run}"
    try:
        t0 = time.perf_counter()
        ids = []
        for i in range(n):
            c = client.api.create_container(
                image,
                name=f"efbench-base-{run}-{i}",
                labels={"net.edgefleet.bench": run},
                host_config=client.api.create_host_config(),
            )
            client.api.start(c["Id"])
            ids.append(c["Id"])
        baseline = time.perf_counter() - t0
        for cid in ids:
            client.api.remove_container(cid, force=True)
        device = f"efbench-{run}"
        extra = {"docker": {"name_prefix": f"{device}-"}}
        agent = _Agent(root, "docker", extra, edge_hub)
        try:
            _wait(lambda: "lastDesiredStatus" in agent.reported())
            time.sleep(2)
            rss_empty = rss_mb(agent.child.pid)
            mods = {
                f"m{i}": {
                    "type": "docker",
                    "imagePullPolicy": "never",
                    "settings": {"image": image, "createOptions": "{}"},
                }
                for i in range(n)
            }
            agent_label = "net.edgefleet.agent"

            def running() -> bool:
                found = client.api.containers(filters={"label": agent_label, "status": "running"})
                return sum(1 for c in found if c["Names"][0].startswith(f"/{device}-")) >= n

            t0 = time.perf_counter()
            _write_manifest(agent.manifest, mods)
            t_running = _wait(running)
            t_reported = _wait(lambda: agent.all_reported_running(n)) + t_running
            time.sleep(3)
            rss_idle = rss_mb(agent.child.pid)
        finally:
            agent.stop()
            for c in client.api.containers(all=True, filters={"label": agent_label}):
                if c["Names"][0].startswith(f"/{device}-"):
                    client.api.remove_container(c["Id"], force=True)
    finally:
        for c in client.api.containers(all=True, filters={"label": label}):
            client.api.remove_container(c["Id"], force=True)
        client.close()
    return _result("docker", n, baseline, t_running, t_reported, rss_empty, rss_idle)


def docker_available() -> bool:
    try:
        import docker

        client = docker.from_env()
        client.ping()
        client.close()
        return Path(BUSYBOX).exists()
    except Exception:
        return False


def run_bench(
    n: int, runtimes: list[str], progress: Callable[[str], None], edge_hub: bool = True
) -> dict[str, Any]:
    results = []
    for runtime in runtimes:
        progress(runtime)
        with tempfile.TemporaryDirectory(prefix=f"efbench-{runtime}-") as tmp:
            fn = bench_process if runtime == "process" else bench_docker
            results.append(fn(n, Path(tmp), edge_hub))
    return {
        "benchmark": "agent",
        "modules": n,
        "edge_hub": edge_hub,
        "results": results,
        "target_rss_mb": 60,
    }
