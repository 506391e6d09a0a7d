"""``edgefleet bench ingest --iothub-dialect``: stored messages/s through IoT Hub's device MQTT
dialect beside edgefleet's own, in one run against one hub.

The hub runs the embedded broker (where the IoT Hub dialect is served) on 8883 of a free
loopback address. The same publishers (paho, QoS 1, one connection per device, worker processes)
send the same number of telemetry messages twice: first with edgefleet's user names and
passwords, then as IoT Hub's SDKs connect (user name ``{host}/{device}/?api-version=...``, a SAS
token as password, which puts every topic through the per-connection mapping).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from composition.bench.ingest import _cpu, bench_data_dir, print_table, run_publishers, wait_stored
from composition.processes import Child, cli, free_loopback, free_port
from edgefleet import sas
from edgefleet.hubclient import HubClient

IOTHUB_PORT = 8883
API_VERSION = "2021-04-12"


def iothub_credentials(host: str, device_id: str, key: str, ttl: int = 3600) -> dict[str, str]:
    """User name and SAS password as azure-iot-device sends them for a device."""
    expiry = str(int(time.time()) + ttl)
    resource = quote(f"{host}/devices/{device_id}", safe="")
    sig = quote(sas.signature(resource, expiry, key), safe="")
    return {
        "username": f"{host}/{device_id}/?api-version={API_VERSION}",
        "password": f"SharedAccessSignature sr={resource}&sig={sig}&se={expiry}",
    }


def measure_phase(
    api: HubClient,
    devs: list[dict[str, Any]],
    messages: int,
    rate: float,
    procs: int,
    pids: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Publish ``messages`` per device and wait until they are stored: stored messages/s,
    latency, and the CPU (cores busy) of each process in ``pids`` during the phase."""
    api.request("GET", "/messaging/stats", params={"reset": "true"})
    total = messages * len(devs)
    before = [_cpu(pid) for pid in pids], time.monotonic()
    run_publishers(devs, messages, rate, False, procs)
    stored = wait_stored(api, total)
    after = [_cpu(pid) for pid in pids], time.monotonic()
    stats = api.request("GET", "/messaging/stats").json()
    window = stats["window"]
    elapsed = (window["lastCommit"] or 0) - (window["firstCommit"] or 0)
    wall = after[1] - before[1]
    return {
        "messages": total,
        "stored": stored,
        "storedMsgPerS": round(window["stored"] / elapsed, 1) if elapsed > 0 else 0.0,
        "e2eP50Ms": stats["latencyMs"]["p50"],
        "e2eP99Ms": stats["latencyMs"]["p99"],
        "cpuCores": [round((b - a) / wall, 2) for a, b in zip(before[0], after[0], strict=True)],
    }


@dataclass
class BenchHub:
    """A hub the bench started with its MQTT on 8883 of a loopback address of its own."""

    data: Path
    host: str
    pid: int
    api: HubClient


@contextmanager
def hub_on_iothub_port(broker: str, prefix: str, say: Any) -> Iterator[BenchHub]:
    """``hub serve --broker BROKER`` with MQTT on port 8883 (the only port IoT Hub's SDKs use)
    of a free 127.0.0.N, in a new data directory."""
    data, token = bench_data_dir(prefix)
    host, port = free_loopback(IOTHUB_PORT), free_port()
    serve = cli("hub", "serve", "--data-dir", str(data), "--host", host, "--port", str(port))
    serve += ["--mqtt-port", str(IOTHUB_PORT), "--broker", broker, "--log-level", "warning"]
    with Child("hub", serve, log=data / "hub.log", stop_timeout=30) as child:
        say(f"starting the hub ({broker} broker, MQTT on {host}:{IOTHUB_PORT})")
        with HubClient(f"http://{host}:{port}", token) as api:
            child.wait_ready(lambda: api.health() is not None, 60, poll=0.2)
            yield BenchHub(data, host, child.pid, api)


def bench_devices(api: HubClient, devices: int, say: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """Create ``bench-0``... : (device id, primary key, its MQTT credentials) each."""
    say(f"creating {devices} devices")
    out = []
    for i in range(devices):
        device_id = f"bench-{i}"
        body = api.create_device(device_id)
        key = body["authentication"]["symmetricKey"]["primaryKey"]
        creds = api.request("GET", f"/devices/{device_id}/mqttCredentials").json()
        out.append((device_id, key, creds))
    return out


def run_dialects(
    devices: int, rate: float, messages: int, procs: int = 2, progress: Any = None
) -> dict[str, Any]:
    """``messages`` per device at ``rate`` messages/s per device, in each dialect."""
    say = progress or (lambda _msg: None)
    with hub_on_iothub_port("embedded", "edgefleet-bench-dialects-", say) as hub:
        api = hub.api
        native: list[dict[str, Any]] = []
        iothub: list[dict[str, Any]] = []
        for device_id, key, creds in bench_devices(api, devices, say):
            native.append({**creds, "device_id": device_id, "mid_prefix": "n-"})
            iothub.append(
                {
                    **creds,
                    **iothub_credentials(hub.host, device_id, key),
                    "device_id": device_id,
                    "mid_prefix": "i-",
                }
            )
        say("edgefleet dialect")
        ours = measure_phase(api, native, messages, rate, procs)
        say("IoT Hub dialect")
        theirs = measure_phase(api, iothub, messages, rate, procs)
    return {
        "broker": "embedded",
        "devices": devices,
        "ratePerDevice": rate,
        "edgefleet": ours,
        "iothub": theirs,
        "ratioIotHubToEdgefleet": round(theirs["storedMsgPerS"] / ours["storedMsgPerS"], 3)
        if ours["storedMsgPerS"]
        else None,
        "cpuCount": os.cpu_count(),
    }


def print_dialects(result: dict[str, Any], as_json: bool) -> None:
    ours, theirs = result["edgefleet"], result["iothub"]
    rows = [
        [name, str(ours[key]), str(theirs[key])]
        for name, key in [
            ("messages stored", "stored"),
            ("stored msg/s", "storedMsgPerS"),
            ("e2e p50 ms", "e2eP50Ms"),
            ("e2e p99 ms", "e2eP99Ms"),
        ]
    ]
    rows.append(["ratio IoT Hub / edgefleet", "", str(result["ratioIotHubToEdgefleet"])])
    title = "bench ingest (embedded broker): IoT Hub dialect vs edgefleet's"
    print_table(result, as_json, title, ["edgefleet", "IoT Hub"], rows)
