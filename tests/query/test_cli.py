"""`edgefleet query eval` as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path


def run_eval(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "composition.cli", "query", "eval", "--cases", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_eval_prints_one_line_per_case_in_order(tmp_path: Path) -> None:
    cases = [
        json.dumps({"query": "SELECT * FROM devices WHERE tags.a = 'x'"}),
        json.dumps({"query": "SELECT * FROM devices WHERE tags.a = "}),
        "{this is not json",
        json.dumps(
            {
                "condition": "tags.env='prod' AND tags.n > 2",
                "twin": {"tags": {"env": "prod", "n": 3}},
            }
        ),
        "",
        json.dumps({"condition": "tags.env != 'prod'", "twin": {"tags": {}}}),
        json.dumps({"condition": "tags.env = 'prod'"}),
        json.dumps({"condition": "tags.env = ", "twin": {}}),
        json.dumps({"twin": {}}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"condition": "deviceId = 'x'", "twin": "nope"}),
    ]
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(cases) + "\n", encoding="utf-8")
    result = run_eval(path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["result"] for line in lines] == [
        "ok",
        "error",
        "error",
        True,
        False,
        "ok",
        "error",
        "error",
        "error",
        "error",
    ]
    assert lines[1]["error"].startswith("line 1, column 38 (offset 37): expected a value")
    assert "invalid JSON" in lines[2]["error"] and "column" in lines[2]["error"]
    assert "column 12" in lines[6]["error"]
    assert all(("error" in line) == (line["result"] == "error") for line in lines)


def test_eval_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    result = run_eval(tmp_path / "absent.jsonl")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "absent.jsonl" in result.stderr


def test_bench_query_reports_compiled_and_naive_rates() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "composition.cli",
            "bench",
            "query",
            "--twins",
            "50",
            "--min-seconds",
            "0.01",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["twins"] == 50
    for row in report["results"]:
        assert row["compiled_evals_per_s"] > 0 and row["naive_evals_per_s"] > 0
        assert 0 <= row["matches"] <= 50
