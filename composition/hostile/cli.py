"""``edgefleet chaos hostile``: the parsers and a hub of each broker mode under hostile input."""

from __future__ import annotations

import json
from typing import Any

import typer

from composition.hostile.run import BROKER_MODES
from edgefleet.cli_apps import chaos_app, fail


@chaos_app.command("hostile")
def chaos_hostile(
    broker: list[str] = typer.Option(
        list(BROKER_MODES), "--broker", help="Broker modes to attack (repeat); default all."
    ),
    inputs: int = typer.Option(200, "--inputs", min=1, help="MQTT cases per broker mode."),
    parser_inputs: int = typer.Option(
        3000, "--parser-inputs", min=0, help="Mutated texts per parser (0: skip the parsers)."
    ),
    seed: int = typer.Option(1, "--seed", help="The same seed sends the same inputs."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per target."),
) -> None:
    """Mutated route, query and topic text into the parsers, and malformed or oversized MQTT
    packets from an authenticated device into a hub of each broker mode (started here, on
    loopback); prints inputs tried, crashes, slow inputs and socket leaks, and exits 1 when any
    target crashed, leaked, lost a well-behaved device's message or let one device reach
    another's topics."""
    from composition.hostile.parsers import fuzz, targets
    from composition.hostile.run import run_mode

    unknown = sorted(set(broker) - set(BROKER_MODES))
    if unknown:
        fail(f"--broker: unknown {', '.join(unknown)}; one of {', '.join(BROKER_MODES)}", 2)
    results: list[dict[str, Any]] = []
    if parser_inputs:
        for target in targets():
            report = fuzz(target, parser_inputs, seed).as_json()
            report["passed"] = report["crashes"] == 0 and report["slow"] == 0
            results.append(report)
            _print(report, as_json)
    for mode in dict.fromkeys(broker):
        try:
            outcome = run_mode(mode, inputs, seed)
        except Exception as exc:  # noqa: BLE001 - reported as a failed target
            outcome = {"target": f"hub MQTT ({mode} broker)", "passed": False, "error": str(exc)}
        results.append(outcome)
        _print(outcome, as_json)
    if not all(r["passed"] for r in results):
        raise typer.Exit(1)


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result))
        return
    state = "passed" if result["passed"] else "FAILED"
    if "error" in result:
        typer.echo(f"{result['target']}: {state}: {result['error']}")
        return
    figures = [f"inputs {result['inputs']}", f"crashes {result['crashes']}"]
    if "slow" in result:
        figures += [f"rejected {result['rejected']}", f"slow {result['slow']}"]
        figures.append(f"slowest {result['slowestMs']} ms")
    else:
        figures += [f"leaks {result['leaks']}", f"victim messages {result['victimMessages']}"]
        figures.append("good message stored" if result["goodMessageStored"] else "good LOST")
        figures.append(", ".join(f"{k} {v}" for k, v in sorted(result["outcomes"].items())))
    typer.echo(f"{result['target']}: {state}: {'; '.join(figures)}")
    for example in result.get("examples", []):
        typer.echo(f"    {example}")
