"""``edgefleet bench routes``: the edge hub against two paho/mosquitto baselines, same run.

Measures module-to-module latency (one message at a time: send, wait for arrival) and
throughput (pipelined QoS 1) through the edge hub's local broker, upstream throughput (module ->
store -> upstream client -> a local mosquitto), and the same latency/throughput for bare paho
clients publishing and subscribing through mosquitto (bare) and for paho through mosquitto, a
relay that appends every message to SQLite with a group commit before acknowledging it, and
mosquitto again (same hop: ``sqlite_relay``), then reports the ratios. Every path sends the same
body, at QoS 1, the same number of times, back to back in one process.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from composition.bench.sqlite_relay import SqliteRelay
from composition.processes import Child, free_port, port_open

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
Progress = Callable[[str], None]
HUB_THREADS = ("edgehub",)  # the hub's event loop and forwarder
UPSTREAM_THREADS = ("edgehub", "ef-")  # and the upstream client's network and outbox threads


@contextmanager
def _mosquitto(tmp: Path) -> Iterator[int]:
    if not Path(MOSQUITTO).exists():
        raise RuntimeError("the benchmark needs mosquitto (apt install mosquitto) for its baseline")
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        ("user root\n" if os.geteuid() == 0 else "")
        + f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        + "max_queued_messages 1000000\nmax_inflight_messages 1000\npersistence false\n"
        + "set_tcp_nodelay true\n"
    )
    with Child("mosquitto", [MOSQUITTO, "-c", str(conf)], stop_timeout=5) as broker:
        broker.wait_ready(lambda: port_open(port), 10, poll=0.05)
        yield port


class _Counter:
    def __init__(self) -> None:
        self.n = 0
        self.cond = threading.Condition()
        self.last: float = 0.0

    def hit(self, *_: Any) -> None:
        with self.cond:
            self.n += 1
            self.last = time.perf_counter()
            self.cond.notify_all()

    def wait(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.n < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _latency_stats(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {
        "p50_ms": round(_pct(ms, 0.5), 3),
        "p99_ms": round(_pct(ms, 0.99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def _threads_cpu(prefixes: tuple[str, ...]) -> float:
    """CPU seconds used so far by this process's threads whose names start with ``prefixes``
    (Linux; 0.0 elsewhere): the edge hub's own cost, whatever else loads the machine."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for thread in threading.enumerate():
        if not thread.name.startswith(prefixes) or thread.native_id is None:
            continue
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def _subscriber(port: int, client_id: str, topic: str, counter: _Counter) -> mqtt.Client:
    """A paho client counting what arrives on ``topic`` (QoS 1), its loop started."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.on_message = counter.hit
    client.connect("127.0.0.1", port)
    client.subscribe(topic, 1)
    client.loop_start()
    return client


def _paho_path(
    port: int, n_latency: int, n_throughput: int, body: bytes, send: str, receive: str
) -> dict[str, Any]:
    """Latency and throughput of paho clients publishing under ``send`` and subscribing to
    ``receive`` (the same prefix: through mosquitto; another one: through a relay)."""
    counter = _Counter()
    sub = _subscriber(port, f"bench-sub-{receive}", f"{receive}/#", counter)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{send}")
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    time.sleep(0.3)
    try:
        samples = []
        for i in range(n_latency):
            t0 = time.perf_counter()
            pub.publish(f"{send}/lat", body, qos=1)
            counter.wait(i + 1, 10)
            samples.append(counter.last - t0)
        base = counter.n
        cpu0 = _threads_cpu(("bench-relay",))
        t0 = time.perf_counter()
        infos = [pub.publish(f"{send}/tput", body, qos=1) for _ in range(n_throughput)]
        for info in infos:
            info.wait_for_publish(60)
        counter.wait(base + n_throughput, 60)
        elapsed = counter.last - t0
        relay_cpu = _threads_cpu(("bench-relay",)) - cpu0
    finally:
        pub.loop_stop()
        sub.loop_stop()
        pub.disconnect()
        sub.disconnect()
    out = {"latency": _latency_stats(samples), "messages_per_s": round(n_throughput / elapsed)}
    if send != receive:
        out["relay_cpu_us_per_message"] = round(relay_cpu * 1e6 / n_throughput)
    return out


def _same_hop(tmp: Path, port: int, n_latency: int, n_throughput: int, body: bytes) -> Any:
    """Paho through mosquitto, a SQLite-appending relay and mosquitto again."""
    relay = SqliteRelay(port, tmp / "relay.db", "relay-in", "relay-out")
    relay.start()
    try:
        return _paho_path(port, n_latency, n_throughput, body, "relay-in", "relay-out")
    finally:
        relay.stop()


def run_bench(
    n_latency: int = 1000, n_throughput: int = 10000, progress: Progress | None = None
) -> dict[str, Any]:
    from edge_agent.edgehub.hub import EdgeHub, EdgeHubConfig
    from edgefleet.sdk.device_client import DeviceClient
    from edgefleet.sdk.module_client import Message, ModuleClient

    say = progress or (lambda _s: None)
    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-bench-"))
    try:
        with _mosquitto(tmp) as port:
            body = Message.from_body({"v": 1, "pad": "x" * 48}).data
            say("baseline: bare paho through mosquitto")
            baseline = _paho_path(port, n_latency, n_throughput, body, "bench", "bench")
            say("same-hop baseline: paho through mosquitto, a SQLite relay and mosquitto")
            same_hop = _same_hop(tmp, port, n_latency, n_throughput, body)
            upstream = DeviceClient(
                "bench-dev", "127.0.0.1", port, tls=False, outbox_path=tmp / "outbox.db"
            )
            upstream.connect(10)
            hub = EdgeHub(EdgeHubConfig("bench-dev", tmp / "edgehub"), upstream)
            hub.apply_desired(
                {
                    "routes": {
                        "m2m": "FROM /messages/modules/a/outputs/o1 WHERE $body.v >= 0 "
                        'INTO BrokeredEndpoint("/modules/b/inputs/i1")',
                        "up": "FROM /messages/modules/a/outputs/up INTO $upstream",
                    }
                }
            )
            hub.start()
            clients: list[ModuleClient] = []
            try:
                a, b = (ModuleClient.create_from_environment(hub.module_env(m)) for m in ("a", "b"))
                clients += [a, b]
                counter = _Counter()
                b.on_message_received = counter.hit
                a.connect(10)
                b.connect(10)

                say("edge hub: module-to-module latency")
                samples = []
                for i in range(n_latency):
                    t0 = time.perf_counter()
                    a.send_message_to_output(
                        Message(body, content_type="application/json", content_encoding="utf-8"),
                        "o1",
                    )
                    counter.wait(i + 1, 10)
                    samples.append(counter.last - t0)

                say("edge hub: module-to-module throughput")
                base = counter.n
                msgs = [
                    Message(body, content_type="application/json", content_encoding="utf-8")
                    for _ in range(n_throughput)
                ]
                cpu0 = _threads_cpu(HUB_THREADS)
                t0 = time.perf_counter()
                for i in range(0, n_throughput, 500):
                    a.send_messages_to_output(list(msgs[i : i + 500]), "o1", timeout=60)
                counter.wait(base + n_throughput, 60)
                m2m_rate = n_throughput / (counter.last - t0)
                m2m_cpu = _threads_cpu(HUB_THREADS) - cpu0

                say("edge hub: upstream throughput")
                up_counter = _Counter()
                rec = _subscriber(
                    port,
                    "bench-up-sub",
                    "devices/bench-dev/modules/a/messages/events/#",
                    up_counter,
                )
                time.sleep(0.3)
                n_up = max(1, n_throughput // 2)
                up_msgs = [Message(body) for _ in range(n_up)]
                cpu0 = _threads_cpu(UPSTREAM_THREADS)
                t0 = time.perf_counter()
                for i in range(0, n_up, 500):
                    a.send_messages_to_output(list(up_msgs[i : i + 500]), "up", timeout=60)
                accepted = time.perf_counter() - t0
                up_counter.wait(n_up, 120)
                up_rate = up_counter.n / (up_counter.last - t0)
                up_cpu = _threads_cpu(UPSTREAM_THREADS) - cpu0
                rec.loop_stop()
                rec.disconnect()
            finally:
                for c in clients:
                    c.shutdown()
                hub.stop()
                upstream.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lat = _latency_stats(samples)
    return {
        "edgehub": {
            "module_to_module": {
                "latency": lat,
                "messages_per_s": round(m2m_rate),
                "hub_cpu_us_per_message": round(m2m_cpu * 1e6 / n_throughput),
            },
            "upstream": {
                "messages_per_s": round(up_rate),
                "accepted_per_s": round(n_up / accepted),
                "messages": n_up,
                "hub_cpu_us_per_message": round(up_cpu * 1e6 / n_up),
            },
        },
        "baseline_paho_mosquitto": baseline,
        "baseline_same_hop_sqlite_relay": same_hop,
        "ratios": {
            "m2m_latency_p50_vs_baseline": round(lat["p50_ms"] / baseline["latency"]["p50_ms"], 2),
            "m2m_latency_p99_vs_baseline": round(lat["p99_ms"] / baseline["latency"]["p99_ms"], 2),
            "m2m_throughput_vs_baseline": round(m2m_rate / baseline["messages_per_s"], 3),
            "upstream_throughput_vs_baseline": round(up_rate / baseline["messages_per_s"], 3),
            "m2m_latency_p50_vs_same_hop": round(lat["p50_ms"] / same_hop["latency"]["p50_ms"], 2),
            "m2m_latency_p99_vs_same_hop": round(lat["p99_ms"] / same_hop["latency"]["p99_ms"], 2),
            "m2m_throughput_vs_same_hop": round(m2m_rate / same_hop["messages_per_s"], 3),
        },
        "params": {"latency_messages": n_latency, "throughput_messages": n_throughput},
    }
