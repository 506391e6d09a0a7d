"""The demo's steps, each a child process or a hub call, with the failing step named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from composition.demo.manifest import (
    DEPLOYMENT_ID,
    DEPLOYMENT_TAGS,
    DEVICE_ID,
    MODEL,
    MODULES,
    demo_configuration,
    demo_manifest,
)
from composition.demo.observed import Observed
from composition.demo.view import live_view
from composition.processes import cli, free_port


class DemoError(Exception):
    def __init__(self, step: str, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.message = message
        self.log = log

    def line(self) -> str:
        where = f" (see {self.log})" if self.log else ""
        return f"error: demo step '{self.step}' failed: {self.message}{where}"


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


class Demo:
    def __init__(self, data_dir: Path, model_dir: Path | None, console: Any) -> None:
        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.hub_dir = data_dir / "hub"
        self.agent_dir = data_dir / "agent"
        self.model_dir = model_dir
        self.console = console
        self.hub_proc: subprocess.Popen[bytes] | None = None
        self.agent_proc: subprocess.Popen[bytes] | None = None
        self.hub_url = ""
        self.token = ""
        self.client: Any = None
        self.exit_codes: dict[str, int | None] = {}
        self.reported: dict[str, Any] = {}
        self.seen = Observed()
        self.watched = 0.0

    # --- steps ----------------------------------------------------------------------------------

    @contextmanager
    def step(self, name: str, log: Path | None = None) -> Iterator[Callable[[str], None]]:
        """One named step with a spinner; any failure becomes a DemoError naming the step."""
        start = time.monotonic()
        with self.console.status(name + " ...") as status:
            try:
                yield lambda msg: status.update(f"{name}: {msg}")
            except DemoError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported as the step's failure
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if isinstance(exc, ModuleNotFoundError):
                    text += '; the demo needs pip install "edgefleet[hub,agent,ml]"'
                raise DemoError(name, text, log) from exc
        self.console.print(f"[green]✓[/green] {name} [dim]({time.monotonic() - start:.1f}s)[/dim]")

    def _popen(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / log_name).open("ab") as log:
            return subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # Ctrl-C reaches only the demo, which stops them in order
            )

    def start_hub(self) -> None:
        log = self.logs / "hub.log"
        with self.step("starting the hub (embedded MQTT broker, SQLite)", log):
            self.hub_dir.mkdir(parents=True, exist_ok=True)
            port = free_port()
            args = ["hub", "serve", "--data-dir", str(self.hub_dir), "--host", "127.0.0.1"]
            args += ["--port", str(port), "--broker", "embedded", "--mqtt-port", "0"]
            self.hub_proc = self._popen(cli(*args), "hub.log")
            self.hub_url = f"http://127.0.0.1:{port}"
            _wait_http(self.hub_url + "/health", self.hub_proc, log, timeout=90)

    def create_token(self) -> None:
        log = self.logs / "token.log"
        with self.step("creating an admin API token", log):
            args = ["hub", "token", "create", "--data-dir", str(self.hub_dir)]
            args += ["--scope", "admin", "--name", "edgefleet-demo"]
            result = subprocess.run(cli(*args), capture_output=True, text=True, timeout=120)
            log.write_text(result.stderr)
            if result.returncode != 0:
                raise RuntimeError(_tail(log, 2) or f"exit code {result.returncode}")
            self.token = result.stdout.strip()
            (self.data_dir / "token").write_text(self.token + "\n")
            (self.data_dir / "hub-url").write_text(self.hub_url + "\n")
            from edgefleet.hubclient import HubClient

            self.client = HubClient(self.hub_url, self.token)

    def dashboard_link(self) -> str:
        """A one-time sign-in link to the hub's dashboard (no token in the URL)."""
        assert self.client is not None
        answer = self.client.request("POST", "/ui/login-codes").json()
        return self.hub_url + str(answer["path"])

    def create_device(self) -> dict[str, Any]:
        with self.step(f"creating IoT Edge device {DEVICE_ID!r}"):
            device: dict[str, Any] = self.client.create_device(
                DEVICE_ID, {"capabilities": {"iotEdge": True}}
            )
            return device

    def ensure_model(self) -> Path:
        from modules.accelerators.model_store import ModelStore

        store = ModelStore(self.model_dir)
        if store.has(MODEL):
            self.console.print(f"[green]✓[/green] model {MODEL} found in {store.root}")
            return store.root
        with self.step(f"building {MODEL} into {store.root} (once)") as say:
            import warnings

            from modules.featurizer.build import build_model

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's ONNX exporter notes, not for users
                build_model(MODEL, store, ("fp32",), 32, progress=say)
        return store.root

    def deploy(self, model_dir: Path, frame_interval: float, accelerator: str) -> None:
        with self.step("setting the deployment (sensor, camera -> scoring)"):
            doc = demo_manifest(
                sys.executable,
                str(model_dir),
                frame_interval=frame_interval,
                accelerator=accelerator,
                precision="bfp8" if accelerator == "fpga-emulator" else "fp32",
                # the scoring module starts an emulated card on this socket (one per demo)
                fpga_device=str(self.data_dir / "fpga0.sock"),
            )
            (self.data_dir / "deployment.json").write_text(json.dumps(doc, indent=2) + "\n")
            # a fleet deployment, as operators make them: every device tagged for the pipeline
            self.client.patch_twin(DEVICE_ID, {"tags": DEPLOYMENT_TAGS})
            self.client.put_configuration(DEPLOYMENT_ID, demo_configuration(doc))

    def start_agent(self) -> None:
        """The agent runs with what ``edgefleet device agent-config`` gives a device, plus the
        process runtime and a quick reconcile loop for the demo."""
        from cloud_hub.client_cli.agent_config import fetch_agent_config

        log = self.logs / "agent.log"
        with self.step("starting the edge agent", log):
            config = fetch_agent_config(self.client, DEVICE_ID, self.agent_dir / "data")
            config.update(
                hostname=DEVICE_ID,
                runtime={"type": "process"},
                reconcile={"interval_secs": 1, "stop_timeout_secs": 5},
            )
            self.agent_dir.mkdir(parents=True, exist_ok=True)
            config_path = self.agent_dir / "agent.json"
            config_path.write_text(json.dumps(config, indent=2))
            self.agent_proc = self._popen(
                cli("agent", "run", "--config", str(config_path)), "agent.log"
            )

    def wait_modules(self, timeout: float) -> None:
        log = self.logs / "agent.log"
        with self.step("waiting for the modules to run", log) as say:
            deadline = time.monotonic() + timeout
            states: dict[str, str] = {}
            while time.monotonic() < deadline:
                self._check_alive()
                twin = self.client.get_twin(DEVICE_ID, "$edgeAgent")
                self.reported = twin.get("properties", {}).get("reported", {})
                modules = self.reported.get("modules") or {}
                states = {
                    m: (modules.get(m) or {}).get("runtimeStatus", "pending") for m in MODULES
                }
                say(", ".join(f"{m} {s}" for m, s in states.items()))
                status = self.reported.get("lastDesiredStatus") or {}
                if status.get("code", 200) >= 400:
                    raise RuntimeError(f"the agent rejected the deployment: {status}")
                if all(s == "running" for s in states.values()):
                    return
                time.sleep(0.5)
            raise TimeoutError(f"modules not running after {timeout:.0f}s: {states}")

    def _check_alive(self) -> None:
        for name, proc in (("hub", self.hub_proc), ("agent", self.agent_proc)):
            if proc is not None and proc.poll() is not None:
                log = self.logs / f"{name}.log"
                raise DemoError(
                    f"running the {name}",
                    f"the {name} exited with code {proc.returncode}: {_tail(log, 3)}",
                    log,
                )

    def poll(self, seen: Observed) -> None:
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if seen.since:
                params["since"] = seen.since
            page = self.client.request(
                "GET", f"/devices/{DEVICE_ID}/messages", params=params
            ).json()
            for message in page.get("messages", []):
                seen.add(message)
            if page.get("next"):
                seen.since = page["next"]
            if len(page.get("messages", [])) < 1000:
                return

    def watch(self, duration: float, live_console: Any) -> None:
        """Show what reaches the hub for ``duration`` seconds (``self.seen`` keeps it)."""
        from rich.live import Live

        seen = self.seen
        start = time.monotonic()
        end = start + duration if duration > 0 else float("inf")  # 0: until Ctrl-C
        with Live(
            live_view(seen, duration if duration > 0 else None),
            console=live_console,
            refresh_per_second=4,
        ) as live:
            while True:
                self._check_alive()
                try:
                    self.poll(seen)
                except Exception as exc:  # noqa: BLE001 - HubClientError, bad JSON
                    raise DemoError(
                        "reading messages from the hub", str(exc), self.logs / "hub.log"
                    ) from exc
                left = end - time.monotonic()
                live.update(live_view(seen, max(0.0, left) if duration > 0 else None))
                self.watched = time.monotonic() - start
                if left <= 0:
                    break
                time.sleep(min(0.5, left))  # 0.5 when left is infinite

    def shutdown(self) -> None:
        """SIGTERM the agent (it stops its modules), then the hub; SIGKILL only after a timeout."""
        for name, proc, wait in (("agent", self.agent_proc, 40.0), ("hub", self.hub_proc, 30.0)):
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(wait)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            self.exit_codes[name] = proc.returncode
        if self.client is not None:
            self.client.close()


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode}: {_tail(log, 3)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s")
