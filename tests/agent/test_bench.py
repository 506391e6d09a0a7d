"""`edgefleet bench agent` prints its figures as JSON."""

import json
import subprocess
import sys


def test_bench_agent_process_json() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "composition.cli",
            "bench",
            "agent",
            "--modules",
            "2",
            "--runtime",
            "process",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    (row,) = data["results"]
    assert row["runtime"] == "process" and row["modules"] == 2
    assert row["agent_rss_mb_idle"] > 0 and row["deploy_to_running_s"] > 0
    assert row["baseline_direct_start_s"] > 0 and row["ratio_running_vs_baseline"] > 0
