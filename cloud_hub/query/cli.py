"""``edgefleet query eval``: parse queries / evaluate conditions from a JSON-lines file.

(The hub's command that runs a query against a hub is ``edgefleet query run "SELECT ..."``.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

import typer

from edgefleet.cli_apps import query_app


def eval_case(line: str) -> dict[str, Any]:
    """One case -> ``{"result": "ok"|true|false|"error"[, "error": message]}``."""
    from cloud_hub.query import QueryError, evaluate, parse_condition, parse_query

    try:
        case = json.loads(line)
    except json.JSONDecodeError as exc:
        return {
            "result": "error",
            "error": f"invalid JSON at line 1, column {exc.colno} (offset {exc.pos}): {exc.msg}",
        }
    if not isinstance(case, dict):
        return {"result": "error", "error": "a case must be a JSON object"}
    try:
        if "query" in case:
            if not isinstance(case["query"], str):
                return {"result": "error", "error": "'query' must be a string"}
            parse_query(case["query"])
            return {"result": "ok"}
        if "condition" in case:
            if not isinstance(case["condition"], str):
                return {"result": "error", "error": "'condition' must be a string"}
            condition = parse_condition(case["condition"])
            if "twin" not in case:
                return {"result": "ok"}
            twin = case["twin"]
            if not isinstance(twin, dict):
                return {"result": "error", "error": "'twin' must be a JSON object"}
            return {"result": evaluate(condition, twin) is True}
    except QueryError as exc:
        return {"result": "error", "error": str(exc)}
    return {"result": "error", "error": "a case needs a 'query' or a 'condition' key"}


def run_cases(source: TextIO, out: TextIO) -> int:
    count = 0
    for raw in source:
        line = raw.strip()
        if not line:
            continue
        out.write(json.dumps(eval_case(line), ensure_ascii=False) + "\n")
        count += 1
    out.flush()
    return count


@query_app.command("eval")
def eval_command(
    cases: str = typer.Option(
        ..., "--cases", help="JSON-lines file of cases ('-' for stdin).", metavar="FILE.jsonl"
    ),
    json_output: bool = typer.Option(
        True, "--json/--no-json", help="Output is always JSON lines; accepted for uniformity."
    ),
) -> None:
    """Parse queries and evaluate conditions; one JSON result line per case, in order.

    A case is {"query": "SELECT ..."} (parse only), {"condition": "..."} (parse only) or
    {"condition": "...", "twin": {...}} (evaluate).
    """
    if cases == "-":
        run_cases(sys.stdin, sys.stdout)
        return
    path = Path(cases)
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except OSError as exc:
        typer.echo(f"error: cannot read {cases}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    with handle:
        run_cases(handle, sys.stdout)
