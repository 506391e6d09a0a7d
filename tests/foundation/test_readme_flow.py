"""README's "A first fleet" lines, run as a new user would: a hub with default ports, a device,
its agent.yaml from ``device agent-config``, the agent, and a module that runs and logs.

The lines are read from README.md (so the README cannot drift from what works) and run on a
loopback address of this test's own (127.0.0.N), so the default ports 8080 and 8883 collide with
no other test; data directories move under tmp_path.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from cloud_hub.broker.preflight import port_taken
from tests.support.hub import stop_process

ROOT = Path(__file__).resolve().parents[2]
CLI = f"{shlex.quote(sys.executable)} -m composition.cli"


def readme_flow() -> list[str]:
    text = (ROOT / "README.md").read_text()
    marker = text.index("<!-- readme-flow")
    block = text[marker:].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    return [line for line in lines if line]


def own_loopback_address() -> str:
    """A 127.0.0.N where nothing listens on the README's ports."""
    rng = random.Random()
    for _ in range(200):
        address = f"127.0.0.{rng.randrange(2, 255)}"
        if not any(port_taken(address, port) for port in (8080, 8883)):
            return address
    raise RuntimeError("no free loopback address for the README flow")


def localize(line: str, address: str, tmp_path: Path) -> str:
    line = line.replace("127.0.0.1", address).replace("/var/lib/", f"{tmp_path}/")
    return re.sub(r"(?<![\w./$-])edgefleet (?=[a-z])", f"{CLI} ", line)


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in reversed(started):
        stop_process(process)


def wait_for_health(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, f"hub exited:\n{log.read_text(errors='replace')}"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"hub not ready:\n{log.read_text(errors='replace')}")


def test_readme_first_fleet(tmp_path: Path, background: list[subprocess.Popen[bytes]]) -> None:
    lines = readme_flow()
    assert [line.split()[:3] for line in lines] == [
        ["edgefleet", "hub", "serve"],
        ["export", "EDGEFLEET_HUB=http://127.0.0.1:8080"],
        ["export", "EDGEFLEET_TOKEN=$(edgefleet", "hub"],
        ["edgefleet", "device", "create"],
        ["edgefleet", "device", "set-modules"],
        ["edgefleet", "device", "agent-config"],
        ["edgefleet", "agent", "run"],
        ["edgefleet", "logs", "cam-1"],
    ]
    address = own_loopback_address()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "manifests").symlink_to(ROOT / "manifests")
    *setup, logs_line = [localize(line, address, tmp_path) for line in lines]
    for number, line in enumerate(setup):
        if line.startswith("export "):
            name, value = line.removeprefix("export ").split("=", 1)
            expanded = subprocess.run(
                ["bash", "-c", f"printf %s {value}"],
                env=env,
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert expanded.returncode == 0, expanded.stderr
            env[name] = expanded.stdout
        elif line.endswith("&"):
            log = tmp_path / f"background-{number}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    ["bash", "-c", f"exec {line.removesuffix('&').strip()}"],
                    env=env,
                    cwd=workdir,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            background.append(process)
            if " hub serve " in line:
                wait_for_health(f"http://{address}:8080", process, log)
        else:
            done = subprocess.run(
                ["bash", "-c", line],
                env=env,
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"

    agent_yaml = yaml.safe_load((workdir / "agent.yaml").read_text())
    connection = agent_yaml["provisioning"]["connection_string"]
    assert connection.startswith(f"HostName={address};DeviceId=cam-1;SharedAccessKey=")
    assert "mqtt_url" not in agent_yaml.get("hub", {})  # found at HostName:8883, as SDKs do
    assert "BEGIN CERTIFICATE" in agent_yaml["hub"]["ca_cert"]

    expected = "heartbeat from heartbeat on cam-1"
    deadline = time.monotonic() + 120
    shown = ""
    while time.monotonic() < deadline and expected not in shown:
        done = subprocess.run(
            ["bash", "-c", logs_line],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        shown = done.stdout + done.stderr
        time.sleep(1)
    assert expected in shown

    agent, hub = background[1], background[0]
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(60) == 0
    hub.send_signal(signal.SIGTERM)
    assert hub.wait(60) == 0


def test_a_taken_mqtt_port_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    address = own_loopback_address()
    with socket.socket() as squatter:
        squatter.bind((address, 8883))
        squatter.listen()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "composition.cli",
                "hub",
                "serve",
                "--data-dir",
                str(tmp_path / "hub"),
                "--host",
                address,
                "--port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: MQTT port {address}:8883 is in use by another program; choose another with "
        "--mqtt-port (0: a free port, kept across restarts) or stop that program"
    )
