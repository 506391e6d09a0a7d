"""``edgefleet bench ingest``: stored messages/s of a hub with mosquitto, against bare MQTT.

1. Starts a hub (``edgefleet hub serve --broker mosquitto``) in a temporary data directory and
   creates the bench devices.
2. Baseline: the same publishers (bare paho, QoS 1, one connection per device, in worker
   processes) publish to ``devices/{id}/bench/...`` and a bare paho subscriber (the hub's
   auxiliary service user) receives them through the same broker: messages/s received.
3. Hub: the publishers send the same number of messages as telemetry; the hub stores them. Figures:
   stored messages/s (first to last commit), creation-to-commit latency p50/p99 (from the hub's
   counters), hub and broker CPU (cores busy during the phase).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from composition.processes import Child, cli, free_port
from edgefleet import protocol as p
from edgefleet.hubclient import HubClient

AUX_USER = p.HUB_USERNAME + "/aux"


def _publisher(
    devices: list[dict[str, Any]], per_device: int, rate: float, bench_topic: bool, ready: Any
) -> None:
    """One worker process: a connection per device, paced publishing, wait for all PUBACKs.

    A device's ``client_id`` (default: its id) and ``username``/``password`` choose the MQTT
    dialect; ``mid_prefix`` keeps message ids of several phases apart."""
    clients: list[tuple[mqtt.Client, str]] = []
    for dev in devices:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=dev.get("client_id") or dev["device_id"],
            protocol=mqtt.MQTTv311,
        )
        c.username_pw_set(dev["username"], dev["password"])
        if dev.get("tls", True):
            c.tls_set(ca_certs=dev["ca_file"])
        c.max_inflight_messages_set(1000)
        c.connect(dev["host"], dev["port"])
        c.loop_start()
        clients.append((c, dev["device_id"]))
    prefixes = {dev["device_id"]: str(dev.get("mid_prefix") or "") for dev in devices}
    for c, _ in clients:
        deadline = time.monotonic() + 20
        while not c.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
    ready.wait()
    infos: list[mqtt.MQTTMessageInfo] = []
    start = time.monotonic()
    for n in range(per_device):
        due = start + n / rate if rate > 0 else 0
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for c, device_id in clients:
            mid = f"{prefixes[device_id]}{device_id}-{n}"
            bag = {p.SYS_MESSAGE_ID: mid, p.SYS_CREATION_TIME: repr(time.time())}
            if bench_topic:
                topic = f"{p.ROOT}/{device_id}/bench/{p.encode_property_bag(bag)}"
            else:
                topic = p.telemetry_topic(device_id, bag)
            infos.append(c.publish(topic, b'{"v":1}', qos=1))
    for info in infos:
        info.wait_for_publish(120)
    for c, _ in clients:
        c.disconnect()
        c.loop_stop()


def run_publishers(
    devices: list[dict[str, Any]], per_device: int, rate: float, bench_topic: bool, procs: int
) -> None:
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    groups = [devices[i::procs] for i in range(procs) if devices[i::procs]]
    workers = [
        ctx.Process(target=_publisher, args=(g, per_device, rate, bench_topic, ready))
        for g in groups
    ]
    for w in workers:
        w.start()
    time.sleep(1.0 + 0.02 * len(devices))
    ready.set()
    for w in workers:
        w.join()


def bench_data_dir(prefix: str) -> tuple[Path, str]:
    """A fresh hub data directory and an admin token for it."""
    data = Path(tempfile.mkdtemp(prefix=prefix))
    token = subprocess.run(
        cli("hub", "token", "create", "--data-dir", str(data), "--scope", "admin"),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()
    return data, token


def create_bench_devices(api: HubClient, count: int) -> list[dict[str, Any]]:
    """Devices ``bench-0..`` with what a publisher needs to connect as each (``device_id``,
    host, port, user name, password, TLS, CA file)."""
    found: list[dict[str, Any]] = []
    for i in range(count):
        device_id = f"bench-{i}"
        api.create_device(device_id)
        creds = api.request("GET", f"/devices/{device_id}/mqttCredentials").json()
        found.append({**creds, "device_id": device_id})
    return found


def wait_stored(api: HubClient, total: int, timeout: float = 300.0, idle: float = 15.0) -> int:
    """Poll the hub's ingest counters until ``total`` messages are stored, ``timeout`` passes
    or nothing more was stored for ``idle`` seconds (the figure then shows what is missing)."""
    stored = -1
    deadline = time.monotonic() + timeout
    progress = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - progress < idle:
        stats = api.request("GET", "/messaging/stats").json()
        now_stored = int(stats["window"]["stored"])
        if now_stored != stored:
            stored, progress = now_stored, time.monotonic()
        if stored >= total:
            break
        time.sleep(0.05)
    return max(stored, 0)


def _cpu(pid: int) -> float:
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except psutil.Error:
        return 0.0


def _baseline(
    devices: list[dict[str, Any]], per_device: int, rate: float, aux_password: str, procs: int
) -> dict[str, Any]:
    ep = devices[0]
    total = per_device * len(devices)
    received = 0
    first = last = 0.0
    lock = threading.Lock()
    done = threading.Event()
    latencies: list[float] = []

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal received, first, last
        now = time.time()
        with lock:
            received += 1
            if received == 1:
                first = now
            last = now
            bag = p.decode_property_bag(msg.topic.rsplit("/", 1)[-1])
            latencies.append(now - float(bag.get(p.SYS_CREATION_TIME, now)))
            if received >= total:
                done.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=AUX_USER)
    sub.username_pw_set(AUX_USER, aux_password)
    sub.tls_set(ca_certs=ep["ca_file"])
    subscribed = threading.Event()
    sub.on_connect = lambda c, u, f, rc, pr: c.subscribe(f"{p.ROOT}/+/bench/#", qos=1)
    sub.on_subscribe = lambda c, u, mid, rcs, pr: subscribed.set()
    sub.on_message = on_message
    sub.connect(ep["host"], ep["port"])
    sub.loop_start()
    subscribed.wait(20)
    run_publishers(devices, per_device, rate, True, procs)
    done.wait(120)
    sub.disconnect()
    sub.loop_stop()
    elapsed = max(last - first, 1e-6)
    lat = sorted(latencies)
    return {
        "received": received,
        "msgPerS": round(received / elapsed, 1),
        "p50Ms": round(lat[len(lat) // 2] * 1000, 2) if lat else None,
        "p99Ms": round(lat[int(len(lat) * 0.99)] * 1000, 2) if lat else None,
    }


def run_bench(
    devices: int, rate: float, messages: int, procs: int = 2, progress: Any = None
) -> dict[str, Any]:
    """``messages`` per device at ``rate`` messages/s per device (both phases)."""
    say = progress or (lambda _msg: None)
    data, token = bench_data_dir("edgefleet-bench-ingest-")
    port = free_port()
    serve = cli("hub", "serve", "--data-dir", str(data), "--port", str(port), "--mqtt-port", "0")
    serve += ["--broker", "mosquitto", "--log-level", "warning"]
    url = f"http://127.0.0.1:{port}"
    with Child("hub", serve, log=data / "hub.log", stop_timeout=30) as hub:
        say("starting the hub")
        with HubClient(url, token) as api:
            hub.wait_ready(lambda: api.health() is not None, 60, poll=0.2)
            say(f"creating {devices} devices")
            devs = create_bench_devices(api, devices)
            aux_password = (data / "broker" / "service.secret").read_text().strip()
            time.sleep(1.0)  # broker reload with the new devices
            say("baseline: bare paho publish -> subscribe")
            baseline = _baseline(devs, messages, rate, aux_password, procs)

            say("hub ingest")
            api.request("GET", "/messaging/stats", params={"reset": "true"})
            broker_pid = int((data / "broker" / "mosquitto.pid").read_text().strip())
            cpu0 = (_cpu(hub.pid), _cpu(broker_pid), time.monotonic())
            total = messages * devices
            run_publishers(devs, messages, rate, False, procs)
            stored = wait_stored(api, total)
            cpu1 = (_cpu(hub.pid), _cpu(broker_pid), time.monotonic())
            stats = api.request("GET", "/messaging/stats").json()
        wall = cpu1[2] - cpu0[2]
        window = stats["window"]
        elapsed = (window["lastCommit"] or 0) - (window["firstCommit"] or 0)
        hub_rate = window["stored"] / elapsed if elapsed > 0 else 0.0
        return {
            "devices": devices,
            "ratePerDevice": rate,
            "messages": total,
            "stored": stored,
            "storedMsgPerS": round(hub_rate, 1),
            "e2eP50Ms": stats["latencyMs"]["p50"],
            "e2eP99Ms": stats["latencyMs"]["p99"],
            "hubCpuCores": round((cpu1[0] - cpu0[0]) / wall, 2) if wall else None,
            "brokerCpuCores": round((cpu1[1] - cpu0[1]) / wall, 2) if wall else None,
            "baseline": baseline,
            "ratioToBaseline": round(hub_rate / baseline["msgPerS"], 3)
            if baseline["msgPerS"]
            else None,
            "duplicatesSuppressed": stats["duplicates"],
            "cpuCount": os.cpu_count(),
        }


def print_table(
    result: dict[str, Any], as_json: bool, title: str, columns: list[str], rows: list[list[str]]
) -> None:
    """``result`` as JSON, or ``rows`` as a table with a first column for the figure's name."""
    if as_json:
        print(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("figure")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def print_result(result: dict[str, Any], as_json: bool) -> None:
    base = result.get("baseline") or {}
    rows = [
        ["devices x rate", f"{result['devices']} x {result['ratePerDevice']:g}/s"],
        ["messages", str(result["messages"])],
        ["stored msg/s", str(result["storedMsgPerS"])],
        ["e2e p50 / p99 ms (create -> commit)", f"{result['e2eP50Ms']} / {result['e2eP99Ms']}"],
        ["hub CPU (cores)", str(result["hubCpuCores"])],
        ["broker CPU (cores)", str(result["brokerCpuCores"])],
        ["baseline msg/s (bare paho pub -> sub)", str(base.get("msgPerS"))],
        ["baseline p50 / p99 ms", f"{base.get('p50Ms')} / {base.get('p99Ms')}"],
        ["ratio stored / baseline", str(result["ratioToBaseline"])],
    ]
    print_table(result, as_json, "bench ingest (mosquitto)", ["value"], rows)
