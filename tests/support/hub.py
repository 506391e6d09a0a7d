"""Start a real hub process (`edgefleet hub serve`) for integration tests.

    from tests.support.hub import running_hub

    with running_hub(tmp_path) as hub:          # hub.url, hub.token, hub.data_dir, hub.client()
        ...

``extra_args`` become CLI options: ``running_hub(tmp_path, broker="mosquitto")`` passes
``--broker mosquitto``; ``True`` passes a bare flag, ``None``/``False`` nothing. Also pass
``database_url=...`` to use PostgreSQL; ``tls=True`` adds an HTTPS listener on a free port
(``hub.tls_port``, certificate from the hub CA: ``hub.ca_file``). The process gets SIGTERM on
exit (SIGKILL after 20 s).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from edgefleet.hubclient import HubClient


@dataclass
class RunningHub:
    url: str
    token: str
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    database_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    tls_port: int | None = None

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "ca" / "ca.pem"

    def client(self, token: str | None = None) -> HubClient:
        return HubClient(self.url, token or self.token)

    def cli_env(self) -> dict[str, str]:
        """Environment for running `edgefleet` CLI commands against this hub."""
        return {**os.environ, "EDGEFLEET_HUB": self.url, "EDGEFLEET_TOKEN": self.token}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def edgefleet_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "composition.cli", *args]


def _options(extra_args: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in extra_args.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        else:
            out += [flag, str(value)]
    return out


def create_token(data_dir: Path, *scopes: str, database_url: str | None = None) -> str:
    args = ["hub", "token", "create", "--data-dir", str(data_dir)]
    if database_url:
        args += ["--database-url", database_url]
    for scope in scopes or ("admin",):
        args += ["--scope", scope]
    result = subprocess.run(edgefleet_cmd(*args), capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"token create failed: {result.stderr.strip()}")
    return result.stdout.strip()


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


@contextmanager
def running_hub(
    tmp_path: Path,
    *,
    database_url: str | None = None,
    startup_timeout: float = 60.0,
    env: dict[str, str] | None = None,
    tls: bool = False,
    host: str = "127.0.0.1",
    **extra_args: Any,
) -> Iterator[RunningHub]:
    """Run `edgefleet hub serve --host HOST` on a free port with its data in ``tmp_path/hub``."""
    data_dir = tmp_path / "hub"
    data_dir.mkdir(parents=True, exist_ok=True)
    token = create_token(data_dir, "admin", database_url=database_url)
    proc_env = {**os.environ, **(env or {})}
    last_error = ""
    for attempt in range(3):
        port = free_port()
        log_path = data_dir / f"hub-{port}.log"
        args = ["hub", "serve", "--data-dir", str(data_dir), "--host", host]
        args += ["--port", str(port)]
        tls_port = free_port() if tls else None
        if tls_port:
            args += ["--tls-port", str(tls_port)]
        if database_url:
            args += ["--database-url", database_url]
        # The MQTT listener defaults to 8883; tests share the machine, so a free port unless asked.
        args += _options({"mqtt_port": 0, **extra_args})
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                edgefleet_cmd(*args), stdout=log_file, stderr=subprocess.STDOUT, env=proc_env
            )
        url = f"http://{host}:{port}"
        try:
            if _wait_ready(url, process, startup_timeout, tls_port):
                hub = RunningHub(
                    url=url,
                    token=token,
                    data_dir=data_dir,
                    port=port,
                    process=process,
                    log_path=log_path,
                    database_url=database_url,
                    env=proc_env,
                    tls_port=tls_port,
                )
                try:
                    yield hub
                finally:
                    stop_process(process)
                return
        except BaseException:
            stop_process(process)
            raise
        stop_process(process)
        log = log_path.read_text(errors="replace")
        last_error = log if len(log) <= 6000 else f"{log[:3000]}\n...\n{log[-3000:]}"
        if "address already in use" not in log.lower() or attempt == 2:
            break
    raise RuntimeError(f"hub did not become ready:\n{last_error}")


def _wait_ready(
    url: str, process: subprocess.Popen[bytes], timeout: float, tls_port: int | None = None
) -> bool:
    """The hub answers /health with 200 and (the HTTPS listener starts after) takes
    connections on ``tls_port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200 and (
                tls_port is None or _accepts(httpx.URL(url).host, tls_port)
            ):
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True
