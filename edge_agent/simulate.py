"""Simulated devices: N ``DeviceClient``s sending telemetry at a rate and answering methods.

Used by ``edgefleet device simulate`` and as the device side of later benchmarks. Devices are
created in the hub's registry when missing (``{prefix}{i}``); credentials come from the hub's
``/devices/{id}/mqttCredentials``.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet import protocol as p
from edgefleet.hubclient import HubClient, HubClientError
from edgefleet.sdk.device_client import DeviceClient, MethodRequest, MethodResponse


@dataclass
class SimDevice:
    device_id: str
    key: str
    creds: dict[str, Any]


def ensure_devices(hub: HubClient, prefix: str, count: int) -> list[SimDevice]:
    out: list[SimDevice] = []
    for i in range(count):
        device_id = f"{prefix}{i}"
        try:
            device = hub.get_device(device_id)
        except HubClientError as exc:
            if exc.status != 404:
                raise
            device = hub.create_device(device_id)
        key = device["authentication"]["symmetricKey"]["primaryKey"]
        creds = hub.request("GET", f"/devices/{device_id}/mqttCredentials").json()
        out.append(SimDevice(device_id, key, creds))
    return out


def _answer(request: MethodRequest) -> MethodResponse:
    if request.name == "ping":
        return MethodResponse.create_from_method_request(request, 200, {"pong": time.time()})
    return MethodResponse.create_from_method_request(request, 200, {"echo": request.payload})


def simulate(
    devices: list[SimDevice],
    rate: float,
    duration: float,
    *,
    outbox_dir: Path | None = None,
    progress: Callable[[float, int], None] | None = None,
) -> dict[str, Any]:
    """Send ``rate`` messages/s per device for ``duration`` seconds; returns figures."""
    own_dir = outbox_dir is None
    workdir = outbox_dir or Path(tempfile.mkdtemp(prefix="edgefleet-sim-"))
    clients: list[DeviceClient] = []
    for dev in devices:
        client = DeviceClient(
            dev.device_id,
            dev.creds["host"],
            int(dev.creds["port"]),
            symmetric_key=dev.key,
            tls=bool(dev.creds.get("tls", True)),
            ca_file=dev.creds.get("ca_file"),
            outbox_path=workdir / f"{dev.device_id}.db",
        )
        client.on_method_request_received = _answer
        clients.append(client)
    for client in clients:
        client.connect(30)
    sent = 0
    left = -1
    start = time.monotonic()
    tick = 0.1
    owed = 0.0
    try:
        while (now := time.monotonic()) - start < duration:
            owed += rate * tick
            burst = int(owed)
            owed -= burst
            for client in clients:
                batch = [
                    p.Message.from_body(
                        {"temperature": round(20 + random.random() * 5, 2), "seq": sent + i},
                        creation_time=repr(time.time()),
                    )
                    for i in range(burst)
                ]
                if batch:
                    client.send_messages(batch)
            sent += burst * len(clients)
            if progress is not None:
                progress(now - start, sent)
            time.sleep(max(0.0, tick - (time.monotonic() - now)))
        elapsed = time.monotonic() - start
        drained = all(c.wait_for_outbox_empty(60) for c in clients)
        left = sum(len(c.outbox) for c in clients)
    finally:
        for client in clients:
            client.shutdown()
        if own_dir and left == 0:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "devices": len(clients),
        "sent": sent,
        "delivered": sent - left,
        "drained": drained,
        "durationS": round(elapsed, 2),
        "rateMsgPerS": round(sent / elapsed, 1) if elapsed else 0.0,
    }
