"""``edgefleet bench ingest --front-end``: what the hub's MQTT front end costs, in one run
against one hub with managed mosquitto.

The same publishers (paho, QoS 1, one connection per device, worker processes) send the same
number of telemetry messages in three phases:

1. direct: edgefleet's user names straight to mosquitto's internal listener (plain TCP on
   loopback, where the front end relays to), no front end;
2. front end: the same clients on 8883 of the hub's address (TLS, admitted by the front end,
   then a byte relay);
3. IoT Hub dialect: user name ``{host}/{device}/?api-version=...`` and a SAS token on 8883 (the
   front end's packet relay with the topic rewrite, as its own broker login).

Figures per phase: stored messages/s (first to last commit), creation-to-commit latency and the
CPU of the hub process (where the front end runs) and of mosquitto. The three phases run
``rounds`` times in turn (message ids differ per round); each phase's figures are those of its
best round (the one with the most stored messages/s), the least disturbed by anything else on
the machine, and every round is in the JSON.
"""

from __future__ import annotations

import json
import os
from typing import Any

from composition.bench.ingest import print_table
from composition.bench.ingest_dialects import (
    bench_devices,
    hub_on_iothub_port,
    iothub_credentials,
    measure_phase,
)


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    return round(a["storedMsgPerS"] / b["storedMsgPerS"], 3) if b["storedMsgPerS"] else None


def _best(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return max(rounds, key=lambda r: float(r["storedMsgPerS"]))


def run_front_end(
    devices: int,
    rate: float,
    messages: int,
    procs: int = 2,
    progress: Any = None,
    rounds: int = 2,
) -> dict[str, Any]:
    """``messages`` per device at ``rate`` messages/s per device, in each of the three phases,
    ``rounds`` times."""
    say = progress or (lambda _msg: None)
    with hub_on_iothub_port("mosquitto", "edgefleet-bench-front-end-", say) as hub:
        api, data, host = hub.api, hub.data, hub.host
        internal = json.loads((data / "broker" / "ports.json").read_text())["internal_port"]
        broker_pid = int((data / "broker" / "mosquitto.pid").read_text().strip())
        direct, front, iothub = [], [], []
        for device_id, key, creds in bench_devices(api, devices, say):
            base = {**creds, "device_id": device_id}
            direct.append({**base, "host": "127.0.0.1", "port": internal, "tls": False})
            front.append(base)
            iothub.append({**base, **iothub_credentials(host, device_id, key)})
        pids = (hub.pid, broker_pid)
        phases: dict[str, tuple[str, list[dict[str, Any]]]] = {
            "direct": ("direct to mosquitto", direct),
            "frontEnd": ("edgefleet dialect through the front end", front),
            "iothub": ("IoT Hub dialect through the front end", iothub),
        }
        found: dict[str, list[dict[str, Any]]] = {name: [] for name in phases}
        for n in range(rounds):
            for name, (label, devs) in phases.items():
                say(f"round {n + 1}/{rounds}: {label}")
                tagged = [{**d, "mid_prefix": f"{name}-{n}-"} for d in devs]
                found[name].append(measure_phase(api, tagged, messages, rate, procs, pids))
    ours_direct, ours_front, theirs = (_best(found[name]) for name in phases)
    return {
        "broker": "mosquitto",
        "devices": devices,
        "ratePerDevice": rate,
        "direct": ours_direct,
        "frontEnd": ours_front,
        "iothub": theirs,
        "ratioFrontEndToDirect": _ratio(ours_front, ours_direct),
        "ratioIotHubToFrontEnd": _ratio(theirs, ours_front),
        "rounds": found,
        "cpuCount": os.cpu_count(),
        "loadAverage": list(os.getloadavg()),
    }


def print_front_end(result: dict[str, Any], as_json: bool) -> None:
    phases = [result["direct"], result["frontEnd"], result["iothub"]]
    rows = [
        [name, *(str(phase[key]) for phase in phases)]
        for name, key in [
            ("messages stored", "stored"),
            ("stored msg/s", "storedMsgPerS"),
            ("e2e p50 ms", "e2eP50Ms"),
            ("e2e p99 ms", "e2eP99Ms"),
        ]
    ]
    rows.append(["hub CPU (cores)", *(str(phase["cpuCores"][0]) for phase in phases)])
    rows.append(["mosquitto CPU (cores)", *(str(phase["cpuCores"][1]) for phase in phases)])
    rows.append(["ratio front end / direct", "", str(result["ratioFrontEndToDirect"]), ""])
    rows.append(["ratio IoT Hub / front end", "", "", str(result["ratioIotHubToFrontEnd"])])
    title = (
        f"bench ingest --front-end (mosquitto, {result['devices']} x {result['ratePerDevice']:g}/s)"
    )
    columns = ["direct", "front end", "IoT Hub via front end"]
    print_table(result, as_json, title, columns, rows)
