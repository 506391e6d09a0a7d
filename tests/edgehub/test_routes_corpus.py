"""The shared route corpus (IoT Edge's own test data and real manifests) passes 100%."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.edgehub.routes import RouteError, compile_route, parse_route
from edge_agent.edgehub.routes.parser import normalize_source

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "routes"


def _jsonl(name: str) -> list[dict[str, Any]]:
    lines = (CORPUS / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


CONDITIONS = _jsonl("conditions.jsonl")
PARSES = [d for d in _jsonl("routes_parse.jsonl") if "route" in d]
TSV = [
    line.split("\t")
    for line in (CORPUS / "routes.tsv").read_text(encoding="utf-8").splitlines()
    if line and not line.startswith("#")
]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "composition.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_condition_case_gives_the_expected_result_through_the_cli(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        "\n".join(
            json.dumps({"condition": c["condition"], "message": c["message"]}) for c in CONDITIONS
        )
    )
    result = _cli("route", "eval", "--cases", str(cases))
    assert result.returncode == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(got) == len(CONDITIONS) == 305
    wrong = [
        (c["condition"], c["expected"], g)
        for c, g in zip(CONDITIONS, got, strict=True)
        if g["result"] != c["expected"]
    ]
    assert wrong == []
    errors = [g for g in got if g["result"] == "error"]
    assert errors and all("line 1, column" in g["error"] for g in errors)


@pytest.mark.parametrize("case", PARSES, ids=[str(i) for i in range(len(PARSES))])
def test_route_parses_to_the_expected_source_condition_and_sink(case: dict[str, Any]) -> None:
    parsed = parse_route(case["route"])
    assert parsed.source == normalize_source(case["source"])
    assert parsed.condition == case["condition"]
    sink = parsed.sink.to_dict()
    for key, value in case["sink"].items():
        assert sink[key] == value


def test_route_check_cli_prints_the_parsed_routes() -> None:
    for case in PARSES[:3] + PARSES[-3:]:
        result = _cli("route", "check", case["route"])
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["source"] == normalize_source(case["source"])
        assert out["condition"] == case["condition"]


@pytest.mark.parametrize("row", TSV, ids=[str(i) for i in range(len(TSV))])
def test_tsv_route_parses_or_fails_as_marked(row: list[str]) -> None:
    route, expected = row[0].replace("\\n", "\n"), row[2]
    if expected == "valid":
        parse_route(route)
    else:
        with pytest.raises(RouteError) as info:
            parse_route(route)
        assert info.value.line >= 1 and info.value.column >= 1


def test_deployed_manifest_routes_also_type_check() -> None:
    """Routes from real deployments compile fully (conditions type-check), not only parse."""
    for row in TSV:
        if row[2] == "valid" and "RouteFactoryTest" not in row[1]:
            compile_route(row[0].replace("\\n", "\n"))
