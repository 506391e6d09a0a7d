"""``edgefleet bench rollout`` run tiny: simulated agents report, the metrics count them."""

from __future__ import annotations

import json
import subprocess
import sys

from composition.bench.sim_agents import failing_devices, reported_patch


def test_failing_devices_are_an_exact_share_chosen_by_id() -> None:
    ids = [f"d{i}" for i in range(50)]
    chosen = failing_devices(ids, 0.1)
    assert len(chosen) == 5
    assert chosen == failing_devices(reversed(ids), 0.1)
    assert failing_devices(ids, 0.0) == set()


def test_reported_patch_names_the_version_and_module_states() -> None:
    desired = {"$version": 7, "modules": {"b": {}, "a": {}}}
    ok = reported_patch(desired, failing=False)
    assert ok["lastDesiredVersion"] == 7 and ok["lastDesiredStatus"]["code"] == 200
    assert {m["runtimeStatus"] for m in ok["modules"].values()} == {"running"}
    bad = reported_patch(desired, failing=True)
    assert bad["lastDesiredStatus"]["code"] == 400
    assert bad["modules"]["a"] == {"runtimeStatus": "backoff", "exitCode": 1, "restartCount": 3}


def test_tiny_bench_counts_every_report() -> None:
    argv = [sys.executable, "-m", "composition.cli", "bench", "rollout"]
    argv += ["--devices", "20", "--fail-fraction", "0.1", "--assign-devices", "200", "--json"]
    # SQLite only: point the PostgreSQL probe at a port nothing listens on
    env_pg = "postgresql://nobody:nobody@127.0.0.1:1/none"
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=240,
        env={**_env(), "EDGEFLEET_TEST_PG": env_pg},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    rollout = result["rollout"]
    assert rollout["metrics"]["appliedCount"] == 20
    assert rollout["metrics"]["reportedSuccessfulCount"] == 18
    assert rollout["metrics"]["reportedFailedCount"] == 2
    assert rollout["appliedS"] is not None and rollout["allReportedS"] is not None
    assert rollout["verdict"]["pass"] is None  # too small to judge the goal
    sqlite = result["assignment"]["sqlite"]
    assert sqlite["appliedCount"] == 200 and sqlite["appliedS"] is not None
    assert "skipped" in result["assignment"]["postgresql"]
    assert result["machine"]["cpuModel"]


def test_assign_only_measures_the_assignment_on_the_chosen_database() -> None:
    argv = [sys.executable, "-m", "composition.cli", "bench", "rollout", "--assign-only"]
    argv += ["--assign-devices", "50", "--assign-on", "sqlite", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=_env())
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert "rollout" not in result and set(result["assignment"]) == {"sqlite"}
    assert result["assignment"]["sqlite"]["appliedCount"] == 50


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
