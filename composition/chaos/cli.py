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
    params = Params(seconds=seconds, devices=devices, rate=rate)
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
    for found in outcome.get("recoveryTimeouts", []):
        console.print(stall.render(outcome["scenario"], found), markup=False, highlight=False)
