"""A fleet of real edge devices: in each device namespace an edge agent (process runtime, edge
hub with store-and-forward) runs the load-generator module ``load``, deployed through the hub.
The agent's data directory can sit on a small tmpfs (``disk_bytes``) that a scenario fills."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from composition.chaos.fleet import Fleet, newest, read_accepted
from composition.chaos.netns import kill_namespace_processes
from composition.chaos.stall import tail
from edgefleet.manifest import edge_deployment, process_module

ROOT = Path(__file__).resolve().parents[2]
MODULE = "load"


IDLE_MARK = "chaos-idle-module"


def idle_module(name: str) -> dict[str, Any]:
    """A module process that only sleeps; its command line names it (for process counts)."""
    return process_module([sys.executable, "-c", "import time; time.sleep(1e6)", IDLE_MARK, name])


def deployment(
    module_dir: Path, rate: float, idle: list[str] | None = None, generation: int = 0
) -> dict[str, Any]:
    """``modulesContent`` with the load module as a host process, routed upstream, and the
    ``idle`` modules beside it. A new ``generation`` changes the load module's spec, so the
    agent starts it again after it finished (its restart policy is on-failure)."""
    command = [sys.executable, "-m", "composition.chaos.loadmodule", str(module_dir)]
    command += ["--rate", str(rate)]
    env = {"PYTHONPATH": str(ROOT), "CHAOS_GENERATION": str(generation)}
    load = {**process_module(command, env=env), "restartPolicy": "on-failure"}
    modules = {MODULE: load, **{name: idle_module(name) for name in idle or []}}
    return edge_deployment(
        modules, {"up": f"FROM /messages/modules/{MODULE}/outputs/* INTO $upstream"}
    )


class AgentFleet(Fleet):
    def __init__(self, devices: int, rate: float, disk_bytes: int = 0, keep: bool = False):
        super().__init__(devices, rate, keep)
        self.disk_bytes = disk_bytes
        self.generation = 0
        self.idle: dict[str, list[str]] = {}
        self._mounts: list[Path] = []

    def create_args(self, ids: list[str]) -> list[str]:
        return ["--edge", *ids]

    def agent_data(self, device: str) -> Path:
        return self.device_dir(device) / "agent-data"

    def module_dir(self, device: str) -> Path:
        return self.device_dir(device) / MODULE

    def content(self, idle: list[str]) -> dict[str, Any]:
        """The deployment of this generation, the same for every device (fleet deployments)."""
        module_dirs = self.device_dir("{device}") / MODULE
        return deployment(module_dirs, self.rate, idle, self.generation)

    def configure_device(self, device: str, created: dict[str, Any]) -> None:
        data = self.agent_data(device)
        data.mkdir()
        if self.disk_bytes:
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.disk_bytes}", "tmpfs", str(data)],
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
            self._mounts.append(data)
        config = {
            **created,
            "data_dir": str(data),
            "runtime": {"type": "process"},
            "reconcile": {
                "interval_secs": 1, "backoff_base_secs": 0.5, "backoff_max_secs": 2,
                "report_debounce_secs": 0.2, "stop_timeout_secs": 5,
            },
            "edge_hub": True,
            "log_level": "info",
        }  # fmt: skip
        (self.device_dir(device) / "agent.yaml").write_text(yaml.safe_dump(config))

    def start_device(self, device: str) -> None:
        argv = [sys.executable, "-m", "edge_agent", "--config"]
        argv.append(str(self.device_dir(device) / "agent.yaml"))
        n = sum(1 for c in self._children if c.name == device)
        log = self.device_dir(device) / f"agent-{n}.log"
        self.devices[device] = self._child(device, f"d{device.rsplit('-', 1)[1]}", argv, log)

    def start_load(self, timeout: float = 120.0) -> None:
        """Start the agents and deploy the load module to each through the hub."""
        self.generation += 1
        for device in self.devices:
            if self.devices[device] is None:
                self.start_device(device)
            self.deploy(device, self.idle.get(device, []))
        if self.wait_until(self._all_connected, timeout) is None:
            waiting = [d for d in self.devices if not (self.module_dir(d) / "connected").exists()]
            logs = "\n".join(
                f"--- {d}: {name}\n" + "\n".join(lines)
                for d in waiting
                for name, lines in self.log_tails(d).items()
            )
            raise RuntimeError(
                f"load modules of {', '.join(waiting)} did not connect within {timeout:g} s; "
                f"see {self.dir}\n{logs}"
            )

    def marker_dir(self, device: str) -> Path:
        return self.module_dir(device)

    def finish_devices(self, timeout: float = 120.0) -> None:
        self.stop_load()
        self.wait_until(
            lambda: all((self.module_dir(d) / "done").exists() for d in self.devices), timeout
        )

    def accepted(self) -> dict[str, list[int]]:
        return {
            f"{d}/{MODULE}": read_accepted(self.module_dir(d) / "accepted.log")
            for d in self.devices
        }

    def agent_running(self, device: str) -> bool:
        """The device's newest agent has started: it has stopped what a killed agent left
        behind (pid files) and runs the deployment's modules itself from now on."""
        logs = newest(self.device_dir(device).glob("agent-*.log"))
        return bool(logs) and f"agent {device} running" in logs[0].read_text(errors="replace")

    def log_tails(self, device: str) -> dict[str, list[str]]:
        """The newest agent log, the load module's own log and its last send failure."""
        name = device.split("/", 1)[0]
        logs = newest(self.device_dir(name).glob("agent-*.log"))
        logs.append(self.agent_data(name) / "logs" / f"{MODULE}.log")
        logs.append(self.module_dir(name) / "failures")
        return {log.name: tail(log) for log in logs}

    def deploy(self, device: str, idle: list[str]) -> None:
        """Deploy the load module (this generation) and the ``idle`` modules to a device."""
        self.idle[device] = idle
        doc = self.content(idle)
        manifest = self.device_dir(device) / "deployment.json"
        manifest.write_text(json.dumps(doc))
        self.hubctl("deploy", device, str(manifest))

    def _resume(self) -> None:
        for device in self.devices:
            for marker in ("stop", "connected", "done"):
                (self.module_dir(device) / marker).unlink(missing_ok=True)
        self.start_load()

    def module_processes(self, device: str) -> dict[str, int]:
        """How many processes of each module run in the device's namespace (from /proc)."""
        out = subprocess.run(
            ["ip", "netns", "pids", self.node(device).ns], capture_output=True, text=True
        ).stdout
        counts: dict[str, int] = {}
        for pid in out.split():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            name = module_of(argv)
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
        return counts

    def reported(self) -> dict[str, dict[str, Any]]:
        """The ``$edgeAgent`` reported properties of every device, as the hub has them."""
        doc: dict[str, dict[str, Any]] = json.loads(self.hubctl("reported", *self.devices))
        return doc

    def restart_agent(self, device: str) -> None:
        """Stop the device's agent (SIGTERM: its modules stop too) and start it again."""
        child = self.devices[device]
        if child is not None:
            child.stop()
        self.start_device(device)

    def power_off(self, device: str) -> None:
        """What a power cut leaves: the agent and every module process of the device killed
        (SIGKILL to everything in its namespace); its data directory stays as it was."""
        kill_namespace_processes(self.node(device).ns)
        self.kill9(self.devices[device])

    def set_config(self, device: str, **changes: Any) -> None:
        """Change the device's agent configuration (read at the agent's next start)."""
        path = self.device_dir(device) / "agent.yaml"
        config = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({**config, **changes}))

    def evicted_on_device(self, device: str) -> int:
        """How many messages the device's edge hub evicted from its store, read from the
        store's own counters (read-only), not through the agent."""
        path = self.agent_data(device) / "edgehub" / "store.db"
        if not path.exists():
            return 0
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            row = conn.execute("SELECT value FROM counters WHERE name = 'evicted'").fetchone()
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()
        return int(row[0]) if row else 0

    def agent_twin(self, device: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.hubctl("twin", device, "$edgeAgent"))
        return doc

    def close(self) -> None:
        try:
            super().close_processes()
        finally:
            for mount in self._mounts:
                subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)
            self._mounts.clear()
            super().close()


def module_of(argv: list[bytes]) -> str | None:
    """The chaos module a process command line belongs to, if any."""
    if b"composition.chaos.loadmodule" in argv:
        return MODULE
    if IDLE_MARK.encode() in argv:
        i = argv.index(IDLE_MARK.encode())
        return argv[i + 1].decode() if i + 1 < len(argv) else None
    return None


def fill(directory: Path, chunk: int = 1 << 16) -> int:
    """Write ``directory/filler`` until the file system is full; bytes written."""
    written = 0
    with (directory / "filler").open("wb", buffering=0) as out:
        try:
            while True:
                written += out.write(b"\0" * chunk)
        except OSError:
            pass
    return written
