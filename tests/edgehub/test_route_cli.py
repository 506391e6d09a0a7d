"""``edgefleet route check`` and ``route eval`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "composition.cli", "route", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_reports_a_syntax_error_with_its_position_and_exits_1() -> None:
    result = _cli("check", "FROM /messages WHERE a = 'x' AND INTO $upstream")
    assert result.returncode == 1
    err = json.loads(result.stdout)
    assert (err["line"], err["column"]) == (1, 34)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "line 1, column 34" in result.stderr


def test_check_prints_the_route_and_flags_type_errors_with_strict() -> None:
    route = "FROM /messages/modules/m1/* WHERE temp > 100 INTO $upstream"
    relaxed = _cli("check", route)
    assert relaxed.returncode == 0
    out = json.loads(relaxed.stdout)
    assert out["source"] == "/messages/modules/m1" and out["compiles"] is False
    assert out["conditionError"]["column"] == 40
    strict = _cli("check", "--strict", route)
    assert strict.returncode == 1 and "Traceback" not in strict.stderr


def test_eval_answers_every_case_in_order(tmp_path: Path) -> None:
    msg = {
        "source": "/messages/modules/m1/outputs/o",
        "body": '{"t": 30}',
        "properties": {"site": "a"},
        "systemProperties": {"contentType": "application/json", "contentEncoding": "utf-8"},
    }
    cases = [
        {"condition": "$body.t > 20 AND site = 'a'", "message": msg},
        {"route": "FROM /messages/modules/m2/* INTO $upstream", "message": msg},
        {"route": "FROM /messages/modules/m1/* WHERE missing = 'x' INTO $upstream", "message": msg},
        {"condition": "site > 1", "message": msg},
    ]
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in cases) + "\nnot json\n")
    result = _cli("eval", "--cases", str(path))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [x["result"] for x in lines] == ["true", "false", "undefined", "error", "error"]
    assert "column" in lines[3]["error"]


def test_eval_with_a_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    result = _cli("eval", "--cases", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
