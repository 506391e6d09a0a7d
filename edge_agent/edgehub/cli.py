"""``edgefleet route check|eval``: parse a route, evaluate conditions against messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from edgefleet.cli_apps import fail, route_app


@route_app.command("check")
def route_check(
    route: str = typer.Argument(..., help='The route, e.g. "FROM /messages/* INTO $upstream".'),
    strict: bool = typer.Option(
        False, "--strict", help="Also fail when the condition does not type-check."
    ),
) -> None:
    """Parse a route and print it as JSON (errors carry line and column)."""
    from edge_agent.edgehub.routes import RouteError, compile_route, parse_route

    try:
        parsed = parse_route(route)
    except RouteError as exc:
        typer.echo(json.dumps(exc.to_dict()))
        fail(str(exc))
        return
    out: dict[str, Any] = {
        "source": parsed.source,
        "condition": parsed.condition,
        "sink": parsed.sink.to_dict(),
    }
    try:
        compile_route(route)
        out["compiles"] = True
    except RouteError as exc:
        out["compiles"] = False
        out["conditionError"] = exc.to_dict()
    typer.echo(json.dumps(out))
    if not out["compiles"]:
        typer.echo(
            f"{'error' if strict else 'warning'}: condition: {out['conditionError']['error']}"
            f" (line {out['conditionError']['line']}, column "
            f"{out['conditionError']['column']})",
            err=True,
        )
        if strict:
            raise typer.Exit(1)


def _message(spec: dict[str, Any]) -> Any:
    from edge_agent.edgehub.routes import RouteMessage, encode_body

    system = spec.get("systemProperties") or {}
    encoding = None
    for key, value in system.items():
        if key.lower() == "contentencoding" and isinstance(value, str):
            encoding = value
    body = spec.get("body") or ""
    if not isinstance(body, str):
        body = json.dumps(body)
    return RouteMessage(
        str(spec.get("source") or "/messages"),
        encode_body(body, encoding),
        spec.get("properties") or {},
        system,
    )


def evaluate_case(case: Any) -> dict[str, str]:
    """One ``route eval`` case: ``{"result": "true"|"false"|"undefined"|"error"[, "error"]}``."""
    from edge_agent.edgehub.routes import (
        RESULT_NAMES,
        RouteError,
        compile_condition,
        compile_route,
    )

    if not isinstance(case, dict) or not isinstance(case.get("message", {}), dict):
        return {"result": "error", "error": "a case is an object with a message object"}
    try:
        message = _message(case.get("message") or {})
        if isinstance(case.get("route"), str):
            route = compile_route(case["route"])
            if not message.source_key.startswith(route.source_key):
                return {"result": "false"}
            result = route.condition(message)
        elif isinstance(case.get("condition"), str):
            result = compile_condition(case["condition"], message.source)(message)
        else:
            return {"result": "error", "error": "a case needs a 'condition' or a 'route' string"}
    except RouteError as exc:
        return {"result": "error", "error": str(exc)}
    except (TypeError, AttributeError, ValueError) as exc:
        return {"result": "error", "error": f"bad case: {exc}"}
    return {"result": RESULT_NAMES[result]}


@route_app.command("eval")
def route_eval(
    cases: Path = typer.Option(..., "--cases", help="JSON lines: {condition|route, message}."),
) -> None:
    """Evaluate conditions or routes against messages; one JSON result line per case."""
    try:
        lines = cases.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        fail(f"cannot read {cases}: {exc.strerror or exc}")
        return
    out = sys.stdout
    for line in lines:
        if not line.strip():
            continue
        try:
            case = json.loads(line)
        except ValueError as exc:
            result = {"result": "error", "error": f"bad JSON: {exc}"}
        else:
            result = evaluate_case(case)
        out.write(json.dumps(result) + "\n")
    out.flush()
