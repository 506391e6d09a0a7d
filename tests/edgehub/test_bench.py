"""``edgefleet bench routes --json`` runs end to end and reports figures and ratios against
both baselines (bare paho/mosquitto and the same-hop SQLite relay)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_routes_reports_edge_hub_and_baseline_figures() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "composition.cli", "bench", "routes", "--json"]
        + ["--latency-messages", "50", "--throughput-messages", "400"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    m2m = out["edgehub"]["module_to_module"]
    assert m2m["latency"]["p50_ms"] > 0 and m2m["latency"]["p99_ms"] >= m2m["latency"]["p50_ms"]
    assert m2m["messages_per_s"] > 0 and out["edgehub"]["upstream"]["messages_per_s"] > 0
    assert m2m["hub_cpu_us_per_message"] > 0  # the hub's threads did the routing
    assert out["edgehub"]["upstream"]["hub_cpu_us_per_message"] > 0
    assert out["baseline_paho_mosquitto"]["messages_per_s"] > 0
    same_hop = out["baseline_same_hop_sqlite_relay"]
    assert same_hop["messages_per_s"] > 0 and same_hop["latency"]["p50_ms"] > 0
    assert set(out["ratios"]) == {
        "m2m_latency_p50_vs_baseline",
        "m2m_latency_p99_vs_baseline",
        "m2m_throughput_vs_baseline",
        "upstream_throughput_vs_baseline",
        "m2m_latency_p50_vs_same_hop",
        "m2m_latency_p99_vs_same_hop",
        "m2m_throughput_vs_same_hop",
    }
