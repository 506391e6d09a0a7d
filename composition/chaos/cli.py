"""``edgefleet chaos list`` and ``edgefleet chaos run SCENARIO|all``."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import typer

from edgefleet.cli_apps import chaos_app, fail


@chaos_app.command("list")
def chaos_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """The scenarios, in the order ``run all`` runs them."""
    from composition.chaos.scenarios import SCENARIOS

    if as_json:
        typer.echo(
            json.dumps([{"scenario": s.name, "summary": s.summary} for s in SCENARIOS.values()])
        )
        return
    for s in SCENARIOS.values():
        typer.echo(f"{s.name:20} {' '.join(s.summary.split())}")


@chaos_app.command("run")
def chaos_run(
    scenario: str = typer.Argument(..., help="A scenario name (see `chaos list`) or all."),
    seconds: float = typer.Option(10.0, "--seconds", min=1, help="Length of the fault."),
    devices: int = typer.Option(3, "--devices", min=1, max=200),
    rate: float = typer.Option(20.0, "--rate", min=0.1, help="Messages/s per device."),
    jitter_ms: float = typer.Option(
        40.0, "--jitter-ms", min=0, help="lossy: relay delay 10 ms + up to this much jitter."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per scenario."),
) -> None:
    """Run scenarios in network namespaces of their own and print the checker's verdicts; exits
    1 when one failed."""
    from composition.chaos.scenarios import SCENARIOS, Params, run

    if scenario != "all" and scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r}; one of: all, {', '.join(SCENARIOS)}", 2)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        fail("chaos runs need root and iproute2 (network namespaces)", 2)
    names = list(SCENARIOS) if scenario == "all" else [scenario]
    params = Params(seconds=seconds, devices=devices, rate=rate, jitter_ms=jitter_ms)
    failed = False
    for name in names:
        try:
            outcome = run(name, params)
        except Exception as exc:  # noqa: BLE001 - reported as a failed scenario
            outcome = {"scenario": name, "passed": False, "error": str(exc)}
        failed |= not outcome["passed"]
        _print(outcome, as_json)
    if failed:
        raise typer.Exit(1)


def _print(outcome: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(outcome))
        return
    from rich.console import Console
    from rich.table import Table

    from composition.chaos import stall

    console = Console()
    state = "[green]passed[/]" if outcome["passed"] else "[red]FAILED[/]"
    if "error" in outcome:
        console.print(f"{outcome['scenario']}: {state}: {outcome['error']}")
        return
    table = Table(title=f"{outcome['scenario']}: {state}, recovery {outcome['recoverySeconds']} s")
    names = ("expected", "stored", "lost", "duplicated", "reordered", "unexpected")
    table.add_column("device")
    for n in names:
        table.add_column(n, justify="right")
    for d in outcome["perDevice"]:
        table.add_row(d["device"], *(str(d[n]) for n in names))
    table.add_row("[b]total[/]", *(f"[b]{outcome[n]}[/]" for n in names))
    console.print(table)
    for line in _figures(outcome):
        console.print(line, markup=False, highlight=False)
    for found in outcome.get("recoveryTimeouts", []):
        console.print(stall.render(outcome["scenario"], found), markup=False, highlight=False)


def _figures(outcome: dict[str, Any]) -> list[str]:
    """Lines for the twin, method and loss-accounting figures a scenario has."""
    lines = []
    if "twin" in outcome:
        twin, methods = outcome["twin"], outcome["methods"]
        lines.append(
            f"desired patches: {twin['patches']} made, {twin['delivered']} seen, "
            f"{twin['outOfOrder']} out of order"
        )
        lines.append(
            f"direct methods: {methods['calls']} calls, {methods['answered']} answered, "
            f"{methods['failed']} failed, {methods['overdue']} overdue"
        )
        for d in outcome.get("twinMethodsPerDevice", []):
            t, m = d["twin"], d["methods"]
            last = "last arrived" if t["lastArrived"] else "LAST MISSING"
            lines.append(
                f"  {d['device']}: patches {t['delivered']}/{t['patches']} seen, {last}, "
                f"{t['outOfOrder']} out of order; methods {m['answered']}/{m['calls']} "
                f"answered, {m['failed']} failed, {m['overdue']} overdue"
            )
    if "expectedLoss" in outcome:
        lines.append(
            f"evicted (device counters): {outcome.get('evictedOnDevice')}, reported at the hub: "
            f"{outcome.get('evictedReported')}, lost: {outcome['lost']} "
            f"({'accounted' if outcome['lossAccounted'] else 'NOT accounted'})"
        )
    return lines
