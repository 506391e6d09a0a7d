"""Edge hub test helpers: an upstream broker behind a cuttable link, hubs in- and out-of-process.

with upstream_link(tmp_path) as up:                  # mosquitto + TcpProxy + recorder
    with edge_hub(tmp_path, up, desired) as hub:     # EdgeHub + DeviceClient via the proxy
        client = module(hub, "m1")                   # a connected ModuleClient
        up.proxy.cut(); ...; up.proxy.restore()
        up.wait_ids({"m1-0", ...})
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.edgehub.hub import EdgeHub, EdgeHubConfig
from edgefleet import protocol as p
from edgefleet.sdk.device_client import DeviceClient
from edgefleet.sdk.module_client import Message, ModuleClient
from tests.support.mqtt import (
    Mosquitto,
    Recorder,
    create_device,
    credentials,
    mosquitto,
    recorder,
)
from tests.support.tcpproxy import TcpProxy

DEVICE = "edge1"


@dataclass
class Upstream:
    broker: Mosquitto
    proxy: TcpProxy
    rec: Recorder
    extra: list[Any] = field(default_factory=list)

    def messages(self) -> list[tuple[str, p.Message]]:
        """(module, message) of every telemetry message received, in arrival order."""
        out = []
        for topic, payload in list(self.rec.messages):
            try:
                parsed, msg = p.message_from_topic(topic, payload)
            except p.ProtocolError:
                continue
            out.append((parsed.module_id or "", msg))
        return out

    def ids(self) -> list[str]:
        return [m.message_id for _, m in self.messages()]

    def wait_ids(self, expected: set[str], timeout: float = 60.0) -> set[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = set(self.ids())
            if expected <= got:
                return got
            time.sleep(0.1)
        return set(self.ids())


@contextmanager
def upstream_link(tmp: Path) -> Iterator[Upstream]:
    with mosquitto(tmp / "upstream") as broker:
        proxy = TcpProxy(broker.port)
        rec = recorder(broker.port, [f"devices/{DEVICE}/modules/+/messages/events/#"])
        assert rec.subscribed.wait(30)
        try:
            yield Upstream(broker, proxy, rec)
        finally:
            rec.client.loop_stop()
            rec.client.disconnect()
            proxy.close()


def device_client(up: Upstream, data_dir: Path) -> DeviceClient:
    return DeviceClient(
        DEVICE,
        "127.0.0.1",
        up.proxy.port,
        tls=False,
        outbox_path=data_dir / "upstream-outbox.db",
        backoff_base=0.1,
        backoff_max=0.5,
    )


@dataclass(frozen=True)
class CloudDevice:
    """A device of a running cloud hub, as its edge hub's upstream client reaches it."""

    device_id: str
    host: str
    port: int
    key: str
    ca_file: str

    def client(self, outbox: Path, port: int | None = None) -> DeviceClient:
        """The device's client (``port``: a proxy in front of the hub's broker)."""
        return DeviceClient(
            self.device_id,
            self.host,
            port or self.port,
            symmetric_key=self.key,
            ca_file=self.ca_file,
            outbox_path=outbox,
            backoff_base=0.1,
            backoff_max=0.5,
        )


def cloud_device(hub: Any, device_id: str) -> CloudDevice:
    """Create a device with modules ``a`` and ``b`` on the running cloud hub ``hub``."""
    device = create_device(hub, device_id)
    with hub.client() as api:
        for m in ("a", "b"):
            api.create_module(device_id, m)
    creds = credentials(hub, device_id)
    key = device["authentication"]["symmetricKey"]["primaryKey"]
    return CloudDevice(device_id, creds["host"], int(creds["port"]), key, creds["ca_file"])


@contextmanager
def edge_hub(
    tmp: Path, up: Upstream | None, desired: dict[str, Any], **config: Any
) -> Iterator[EdgeHub]:
    data = tmp / "edgehub"
    client = device_client(up, data) if up is not None else None
    hub = EdgeHub(EdgeHubConfig(device_id=DEVICE, data_dir=data, **config), client)
    hub.apply_desired(desired)
    hub.start()
    if client is not None:
        threading.Thread(target=_try_connect, args=(client,), daemon=True).start()
    try:
        yield hub
    finally:
        hub.stop()
        if client is not None:
            client.shutdown()


def _try_connect(client: DeviceClient) -> None:
    try:
        client.connect(timeout=120)
    except Exception:  # noqa: BLE001 - the test decides what it expects
        pass


def module(hub: EdgeHub, module_id: str) -> ModuleClient:
    client = ModuleClient.create_from_environment(hub.module_env(module_id))
    client.connect(timeout=30)
    return client


def assert_a_reaches_b(hub: EdgeHub, payload: bytes = b"hi") -> None:
    """Module ``a``'s output on ``o`` arrives at module ``b`` (the hub's routes send it there)."""
    a, b = module(hub, "a"), module(hub, "b")
    try:
        got = threading.Event()
        b.on_message_received = lambda _m: got.set()
        a.send_message_to_output(Message(payload), "o")
        assert got.wait(30)
    finally:
        a.shutdown()
        b.shutdown()


@dataclass
class HubProcess:
    config_path: Path
    proc: subprocess.Popen[bytes]
    port: int
    env: dict[str, dict[str, str]]
    log_path: Path

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_hub_process(config: dict[str, Any], workdir: Path) -> HubProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "edgehub.json"
    cfg_path.write_text(json.dumps(config))
    log_path = workdir / "edgehub.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.edgehub", str(cfg_path)],
        stdout=subprocess.PIPE,
        stderr=log_path.open("ab"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise RuntimeError(f"edge hub did not start: {log_path.read_text()[-2000:]}")
    info = json.loads(line)
    return HubProcess(cfg_path, proc, int(info["port"]), info["env"], log_path)
