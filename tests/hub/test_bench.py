"""`edgefleet bench hub` runs end to end on a small fleet and reports its figures."""

from __future__ import annotations

import json
import subprocess

from tests.support.hub import edgefleet_cmd


def _bench(*extra: str) -> dict[str, object]:
    result = subprocess.run(
        edgefleet_cmd("bench", "hub", "--devices", "60", "--operations", "40", "--json", *extra),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_bench_hub_reports_both_paths_and_ratios() -> None:
    report = _bench()
    assert report["database"] == "sqlite" and report["devices"] == 60
    for key in ("twin_patch_per_s", "twin_read_per_s"):
        entry = report[key]
        assert isinstance(entry, dict)
        assert entry["service"] > 0 and entry["http"] > 0 and entry["http_vs_service"] > 0
        assert entry["http_server_cpu_ms_per_op"] >= 0  # read from /proc on Linux
        assert entry["http_client_cpu_ms_per_op"] >= 0
    query = report["tag_query"]
    assert isinstance(query, dict)
    assert query["region_query"]["matches"] == 6
    assert query["site_query"]["matches"] == 1
    assert query["tag_filter_page"]["items"] == 1 and query["tag_filter_page"]["hub"]["p50_ms"] > 0
    for key in ("group_by_status", "group_by_status_fleet"):  # the bench's own database
        status = query[key]
        assert status["evaluator_agrees"] is True and status["hub"]["cpu_p50_ms"] >= 0
        assert sorted(row["n"] for row in status["rows"]) == [15, 15, 15, 15]


def test_bench_hub_compares_hub_worker_counts_on_postgresql() -> None:
    from tests.support.pg import temporary_database

    with temporary_database() as url:
        report = _bench("--database-url", url, "--hub-workers", "1,2")
    by_workers = report["by_hub_workers"]
    assert isinstance(by_workers, list)
    assert [entry["hub_workers"] for entry in by_workers] == [1, 2]
    for entry in by_workers:
        assert entry["twin_patch_per_s"] > 0 and entry["twin_read_per_s"] > 0
    assert by_workers[0]["twin_patch_per_s_ratio"] == 1.0
    refused = subprocess.run(
        edgefleet_cmd("bench", "hub", "--hub-workers", "1,2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1 and "--database-url postgresql" in refused.stderr
