"""The processes of a chaos run: a hub (with managed mosquitto) in its namespace and simulated
devices in theirs, started, killed and restarted on demand; what the devices accepted and what the
hub stored. Leaving the context stops everything and deletes the namespaces, also on failure."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

from composition.chaos.checker import Verdict, check
from composition.chaos.hubstore import StoredMessages
from composition.chaos.netns import HUB_ADDR, Node, Topology
from composition.chaos.stall import tail
from composition.processes import Child, cli

API_PORT = 8080  # inside the hub's own namespace, where nothing else listens
MQTT_PORT = 8883
RELAY_PORT = 18883


def read_accepted(log: Path) -> list[int]:
    if not log.exists():
        return []
    return [int(x) for x in log.read_text().split("\n") if x.strip().isdigit()]


def newest(logs: Iterable[Path]) -> list[Path]:
    """The log of the latest start among ``NAME-<n>.log`` files ([] or one path)."""
    numbered = []
    for path in logs:
        start = path.stem.rpartition("-")[2]
        if start.isdigit():
            numbered.append((int(start), path))
    return [max(numbered)[1]] if numbered else []


def _admin_token(hub_dir: Path) -> str:
    """An admin API token, made offline in the hub's fresh data directory (this also creates
    the database, so the hub starts on a migrated one)."""
    from cloud_hub.cli import _open_offline

    hub = _open_offline(hub_dir, None)
    try:
        return str(hub.tokens.create(["admin"], "chaos"))
    finally:
        hub.close()


class Fleet:
    def __init__(self, devices: int, rate: float, keep: bool = False) -> None:
        self.count = devices
        self.rate = rate
        self.keep = keep
        self.topo = Topology()
        self.dir = Path(tempfile.mkdtemp(prefix=f"edgefleet-chaos-{self.topo.prefix}-"))
        self.hub_dir = self.dir / "hub"
        self.hub: Child | None = None
        self.devices: dict[str, Child | None] = {}
        self.store = StoredMessages(self.hub_dir / "hub.db")
        self._children: list[Child] = []
        self.token = ""
        self.stalls: list[dict[str, Any]] = []  # recoveries that timed out (``stall.report``)
        self.probing = False  # devices started now log desired changes and answer methods

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Fleet:
        self.topo.__enter__()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self.topo.add("hub", 1)
        self.token = _admin_token(self.hub_dir)
        self.start_hub()
        ids = [f"chaos-{i}" for i in range(self.count)]
        for i, device in enumerate(ids):
            self.topo.add(f"d{i}", 10 + i)
            self.devices[device] = None
        created = json.loads(self.hubctl("create", *self.create_args(ids)))
        for device in ids:
            home = self.device_dir(device)
            home.mkdir(parents=True)
            self.configure_device(device, created[device])
        time.sleep(1.0)  # mosquitto reloads its password file with the new devices

    def create_args(self, ids: list[str]) -> list[str]:
        return ids

    def configure_device(self, device: str, created: dict[str, Any]) -> None:
        (self.device_dir(device) / "credentials.json").write_text(json.dumps(created))

    def hubctl(self, *args: str) -> str:
        """Run ``composition.chaos.hubctl`` in the hub's namespace; its stdout."""
        argv = [*cli()[:2], "composition.chaos.hubctl", self.api_url, self.token, *args]
        out = subprocess.run(
            self.topo.exec_argv("hub", argv), capture_output=True, text=True, timeout=180
        )
        if out.returncode != 0:
            raise RuntimeError(f"hubctl {args[0]} failed: {out.stderr.strip()[-500:]}")
        return out.stdout

    @property
    def api_url(self) -> str:
        return f"http://{HUB_ADDR}:{API_PORT}"

    def device_dir(self, device: str) -> Path:
        return self.dir / "devices" / device

    def node(self, device: str) -> Node:
        return self.topo.nodes[f"d{device.rsplit('-', 1)[1]}"]

    def _child(self, name: str, role: str, argv: list[str], log: Path) -> Child:
        child = Child(name, self.topo.exec_argv(role, argv), log=log, stop_timeout=20)
        self._children.append(child)
        return child

    def start_hub(self) -> None:
        serve = cli(
            "hub", "serve", "--data-dir", str(self.hub_dir), "--host", HUB_ADDR,
            "--port", str(API_PORT), "--mqtt-port", str(MQTT_PORT), "--broker", "mosquitto",
            "--log-level", "warning",
        )  # fmt: skip
        n = sum(1 for c in self._children if c.name == "hub")
        self.hub = self._child("hub", "hub", serve, self.dir / f"hub-{n}.log")

    def start_device(self, device: str) -> None:
        argv = [*cli()[:2], "composition.chaos.loadgen", str(self.device_dir(device))]
        argv += ["--rate", str(self.rate)] + (["--twin"] if self.probing else [])
        n = sum(1 for c in self._children if c.name == device)
        log = self.device_dir(device) / f"loadgen-{n}.log"
        self.devices[device] = self._child(device, f"d{device.rsplit('-', 1)[1]}", argv, log)

    def start_relay(self, device: str, delay_ms: float, jitter_ms: float) -> None:
        """Route the device through a delaying relay in its own namespace (from its next
        connection on)."""
        home = self.device_dir(device)
        argv = [*cli()[:2], "composition.chaos.relay", "--listen", f"127.0.0.1:{RELAY_PORT}"]
        argv += ["--target", f"{HUB_ADDR}:{MQTT_PORT}", "--delay-ms", str(delay_ms)]
        argv += ["--jitter-ms", str(jitter_ms)]
        role = f"d{device.rsplit('-', 1)[1]}"
        self._child(f"relay-{device}", role, argv, home / "relay.log")
        (home / "host").write_text("127.0.0.1")
        (home / "port").write_text(str(RELAY_PORT))

    def start_probe(self, seconds: float, method_timeout: float) -> subprocess.Popen[str]:
        """Patch desired properties of every device and call a direct method on each for
        ``seconds`` (``hubctl probe``, in the hub's namespace); its stdout is the JSON."""
        argv = [*cli()[:2], "composition.chaos.hubctl", self.api_url, self.token, "probe"]
        argv += [str(seconds), str(method_timeout), *self.devices]
        return subprocess.Popen(
            self.topo.exec_argv("hub", argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def desired_seen(self, device: str) -> list[dict[str, Any]]:
        """The desired changes the device's handler logged, in arrival order."""
        path = self.device_dir(device) / "desired.log"
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip().endswith("}")]

    def start_load(self, timeout: float = 90.0) -> None:
        """Start every device and wait until each has connected once."""
        for device in self.devices:
            self.start_device(device)
        if self.wait_until(self._all_connected, timeout) is None:
            raise RuntimeError(f"devices did not connect within {timeout:g} s; see {self.dir}")

    def _all_connected(self) -> bool:
        for device, child in self.devices.items():
            if child is not None and child.proc.poll() is not None:
                raise RuntimeError(f"{device} exited; see {child.log_path}")
        return all((self.marker_dir(d) / "connected").exists() for d in self.devices)

    def marker_dir(self, device: str) -> Path:
        """Where the device's load generator keeps its log and its stop/connected markers."""
        return self.device_dir(device)

    def stop_load(self) -> None:
        for device in self.devices:
            if self.marker_dir(device).exists():
                (self.marker_dir(device) / "stop").touch()

    def kill9(self, child: Child | None) -> None:
        if child is not None and child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()

    def broker_pid(self) -> int:
        return int((self.hub_dir / "broker" / "mosquitto.pid").read_text().strip())

    def signal_broker(self, sig: signal.Signals) -> int:
        pid = self.broker_pid()
        os.kill(pid, sig)
        return pid

    def close_processes(self) -> None:
        """Stop every process the run started (SIGTERM, then SIGKILL)."""
        self.stop_load()
        for child in reversed(self._children):
            try:
                child.stop()
            except Exception:  # noqa: BLE001 - the namespaces' removal kills what is left
                pass

    def close(self) -> None:
        try:
            self.close_processes()
        finally:
            self.topo.close()
            if not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- observations ---------------------------------------------------------------------------

    def accepted(self) -> dict[str, list[int]]:
        return {d: read_accepted(self.device_dir(d) / "accepted.log") for d in self.devices}

    def wait_load(self, seconds: float) -> None:
        """Let the load run; fail early when a device process died on its own."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for device, child in self.devices.items():
                if child is not None and child.proc.poll() not in (None, 0):
                    raise RuntimeError(f"{device} exited; see {child.log_path}")
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def caught_up(self, snapshot: dict[str, list[int]]) -> bool:
        """Every message of ``snapshot`` is stored."""
        have = self.stored_sets()
        return all(set(seqs) <= have.get(d, set()) for d, seqs in snapshot.items())

    def flowing(self, snapshot: dict[str, list[int]]) -> bool:
        """Each device of ``snapshot`` has its newest message there, or a later one, stored
        (delivery works again, whether or not older ones were lost: a store's cap may evict
        even that newest one before the link is back)."""
        have = self.stored_sets()
        return all(not seqs or max(have.get(d, {-1})) >= max(seqs) for d, seqs in snapshot.items())

    def log_tails(self, device: str) -> dict[str, list[str]]:
        """The last lines of the logs that tell what a device (an ``accepted`` key) was doing."""
        logs = newest(self.device_dir(device).glob("loadgen-*.log"))
        return {log.name: tail(log) for log in logs}

    def stored_sets(self) -> dict[str, set[int]]:
        """Per device, the sequence numbers the hub has stored (read now)."""
        self.store.poll()
        have: dict[str, set[int]] = {}
        for device, seq in self.store.rows:
            have.setdefault(device, set()).add(seq)
        return have

    def wait_until(self, cond: Callable[[], bool], timeout: float) -> float | None:
        """Seconds until ``cond`` held, None when ``timeout`` passed first."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if cond():
                return time.monotonic() - start
            time.sleep(0.1)
        return None

    def restart_devices(self) -> None:
        """Stop every device gracefully (its outbox keeps what is unsent) and start it again."""
        self.finish_devices()
        self._resume()

    def _resume(self) -> None:
        for device in self.devices:
            (self.device_dir(device) / "stop").unlink(missing_ok=True)
            (self.device_dir(device) / "connected").unlink(missing_ok=True)
        self.start_load()

    def finish_devices(self, timeout: float = 120.0) -> None:
        self.stop_load()
        for child in self.devices.values():
            if child is not None:
                try:
                    child.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    child.proc.kill()

    def checkpoint(self, timeout: float = 120.0) -> Verdict:
        """Judge the run so far (as ``finish``), then start the devices again: they continue
        their sequences, so later verdicts cover everything since the start."""
        verdict = self.finish(timeout)
        self._resume()
        return verdict

    def finish(self, timeout: float = 120.0) -> Verdict:
        """Stop the load, let the devices drain, and judge what the hub stored."""
        self.finish_devices(timeout)
        accepted = self.accepted()
        self.wait_until(partial(self._settled, accepted, [-1, time.monotonic()]), 30)
        self.store.poll()
        return check(accepted, self.store.rows)

    def _settled(self, accepted: dict[str, list[int]], last: list[float]) -> bool:
        """Everything in ``accepted`` is stored; or each device's newest is and nothing more
        arrived for 2 s (what is missing then was lost, e.g. evicted: no use waiting)."""
        if self.caught_up(accepted):
            return True
        rows = len(self.store.rows)
        if rows != last[0]:
            last[0], last[1] = rows, time.monotonic()
            return False
        return time.monotonic() - last[1] >= 2.0 and self.flowing(accepted)
