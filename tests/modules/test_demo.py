"""``edgefleet demo`` end to end, as a user runs it: hub, agent and modules as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.hub import edgefleet_cmd

CAT_CLASSES = {281, 282, 285}
ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_pipeline_and_prints_a_summary(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    args = ["demo", "--duration", "12", "--frame-interval", "1", "--json"]
    args += ["--data-dir", str(data_dir), "--model-dir", str(tmp_path / "models")]
    result = subprocess.run(
        edgefleet_cmd(*args), capture_output=True, text=True, timeout=170, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["messagesStored"] > 0
    assert summary["messagesByModule"]["simulatedSensor"] > 0
    assert summary["scoringResults"] > 0
    results = {r["frame"]: r for r in summary["latestResults"]}
    assert results["chelsea"]["classId"] in CAT_CLASSES, results
    assert "cat" in results["chelsea"]["label"]
    assert summary["modules"] == {
        "simulatedSensor": "running",
        "camera": "running",
        "scoring": "running",
    }
    assert summary["exitCodes"] == {"agent": 0, "hub": 0}
    # the model was built into the empty store on the way (shown as a step on stderr)
    assert "building efficientnet-lite0" in result.stderr
    # every module stopped on the agent's SIGTERM
    for module in ("simulatedSensor", "camera", "scoring"):
        log = (data_dir / "agent" / "data" / "logs" / f"{module}.log").read_text()
        assert log.rstrip().endswith("stopped"), log[-500:]


def test_a_failed_step_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet.cli", "demo", "--data-dir", str(blocker), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: demo step 'preparing the data directory' failed:")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
