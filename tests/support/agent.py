"""Run the real agent daemon (``edgefleet agent run``) in a subprocess for integration tests.

The agent runs in standalone mode (``provisioning.source: local``): the test writes the
deployment manifest file (what the hub would put in the ``$edgeAgent`` twin) and reads the
reported properties the agent writes to ``<data_dir>/reported.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.hub import RunningHub

ROOT = Path(__file__).resolve().parents[2]


def manifest(
    modules: dict[str, Any],
    credentials: dict[str, Any] | None = None,
    routes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "runtime": {
                        "type": "docker",
                        "settings": {"registryCredentials": credentials or {}},
                    },
                    "systemModules": {
                        "edgeAgent": {"type": "docker", "settings": {"image": "edgefleet/agent"}},
                        "edgeHub": {"type": "docker", "settings": {"image": "edgefleet/hub"}},
                    },
                    "modules": modules,
                }
            },
            "$edgeHub": {
                "properties.desired": {
                    "schemaVersion": "1.2",
                    "routes": routes or {"up": "FROM /messages/* INTO $upstream"},
                    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
                }
            },
        }
    }


class AgentProcess:
    def __init__(self, workdir: Path, device_id: str, runtime_type: str, **extra: Any) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.device_id = device_id
        self.data_dir = workdir / "data"
        self.manifest_path = workdir / "deployment.json"
        self.config_path = workdir / "agent.yaml"
        self.log_path = workdir / "agent.log"
        cfg: dict[str, Any] = {
            "provisioning": {
                "source": "local",
                "manifest": str(self.manifest_path),
                "device_id": device_id,
            },
            "data_dir": str(self.data_dir),
            "runtime": {"type": runtime_type},
            "reconcile": {
                "interval_secs": 0.5,
                "backoff_base_secs": 0.5,
                "backoff_max_secs": 2,
                "max_restarts": 3,
                "healthy_reset_secs": 600,
                "report_debounce_secs": 0.1,
                "stop_timeout_secs": 1,
            },
            "edge_hub": False,
            "log_level": "debug",
        }
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key].update(value)
            else:
                cfg[key] = value
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen[bytes] | None = None

    def deploy(self, doc: dict[str, Any]) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.manifest_path)
        # make the change visible even within one mtime tick
        now = time.time_ns()
        os.utime(self.manifest_path, ns=(now, now))

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "composition.cli",
                "agent",
                "run",
                "--config",
                str(self.config_path),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("agent did not stop on SIGTERM") from None

    def kill9(self) -> None:
        """SIGKILL the agent; its last reported.json is dropped so waits see the next agent."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        (self.data_dir / "reported.json").unlink(missing_ok=True)

    def reported(self) -> dict[str, Any]:
        try:
            data = json.loads((self.data_dir / "reported.json").read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def module(self, name: str) -> dict[str, Any]:
        return dict(self.reported().get("modules", {}).get(name) or {})

    def wait_for(
        self, what: str, check: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        rep: dict[str, Any] = {}
        error: Exception | None = None
        while time.monotonic() < deadline:
            rep = self.reported()
            try:
                # a module not reported yet (KeyError in ``check``) just means "not yet"
                if rep and check(rep):
                    return rep
            except Exception as exc:
                error = exc
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}): {self.tail()}")
            time.sleep(0.1)
        raise AssertionError(
            f"timed out waiting for {what}; reported={rep}\n{self.tail()}"
        ) from error

    def wait_status(self, module: str, status: str, timeout: float = 60) -> dict[str, Any]:
        rep = self.wait_for(
            f"{module} {status}",
            lambda r: (r.get("modules", {}).get(module) or {}).get("runtimeStatus") == status,
            timeout,
        )
        return dict(rep["modules"][module])

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""


def hub_agent(
    hub: RunningHub,
    workdir: Path,
    device: str,
    relay: Callable[[str, int], tuple[str, int]] | None = None,
    **extra: Any,
) -> AgentProcess:
    """An agent (process runtime, edge hub on) for a registered device, with its MQTT key;
    ``relay`` maps the hub's MQTT address to the one the agent uses (e.g. a TcpProxy's)."""
    with hub.client() as client:
        key = client.get_device(device)["authentication"]["symmetricKey"]["primaryKey"]
    headers = {"Authorization": f"Bearer {hub.token}"}
    creds = httpx.get(
        f"{hub.url}/devices/{device}/mqttCredentials", headers=headers, timeout=60
    ).json()
    scheme = "mqtts" if creds["tls"] else "mqtt"
    host, port = creds["host"], creds["port"]
    if relay is not None:
        host, port = relay(host, port)
    conn = f"HostName=127.0.0.1:{hub.port};DeviceId={device};SharedAccessKey={key}"
    return AgentProcess(
        workdir,
        device,
        "process",
        provisioning={"source": "manual", "connection_string": conn},
        hub={
            "mqtt_url": f"{scheme}://{host}:{port}",
            "ca_file": creds["ca_file"],
        },
        edge_hub=True,
        **extra,
    )


def procs_with(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (our module processes)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            out.append(int(entry.name))
    return out
