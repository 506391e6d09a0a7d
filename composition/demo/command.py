"""The ``edgefleet demo`` command."""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path
from typing import Any

import typer

from composition.demo.manifest import DEVICE_ID
from composition.demo.session import Demo, DemoError
from composition.demo.view import print_summary, summary_of
from edgefleet.cli_apps import app


@app.command()
def demo(
    duration: float = typer.Option(
        30.0, "--duration", min=0, help="Seconds to watch the live data (0: until Ctrl-C)."
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Where hub, agent and logs live (default: a new temp dir)."
    ),
    model_dir: Path | None = typer.Option(
        None, "--model-dir", help="Model store (default: EDGEFLEET_MODEL_DIR or the user store)."
    ),
    frame_interval: float = typer.Option(2.0, "--frame-interval", help="Seconds between frames."),
    accelerator: str = typer.Option(
        "cpu", "--accelerator", help="Where the scoring module runs the featurizer."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print only the summary, as JSON."),
) -> None:
    """Run a hub, an edge agent and the demo modules here; show what reaches the hub."""
    from rich.console import Console

    console = Console(stderr=True) if as_json else Console()
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))
    data_dir = data_dir.resolve()
    console.print(f"edgefleet demo: data and logs in {data_dir}")
    run = Demo(data_dir, model_dir.resolve() if model_dir else None, console)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    error: DemoError | None = None
    interrupted = False
    try:
        with run.step("preparing the data directory"):
            run.logs.mkdir(parents=True, exist_ok=True)
        run.start_hub()
        run.create_token()
        console.print(
            f"  hub {run.hub_url}; while it runs: EDGEFLEET_HUB={run.hub_url} "
            f"EDGEFLEET_TOKEN=$(cat {data_dir / 'token'}) edgefleet twin show {DEVICE_ID}"
        )
        try:
            link = run.dashboard_link()  # one line, never wrapped: it is copied whole
            console.print(
                f"  dashboard (one-time sign-in link): {link}",
                soft_wrap=True,
                markup=False,
                highlight=False,
            )
        except Exception as exc:  # noqa: BLE001 - the demo runs on without the link
            console.print(f"  [yellow]no dashboard link: {exc}[/yellow]")
        run.create_device()
        models = run.ensure_model()
        run.deploy(models, frame_interval, accelerator)
        run.start_agent()
        run.wait_modules(timeout=120)
        run.watch(duration, console)
    except DemoError as exc:
        error = exc
    except KeyboardInterrupt:
        interrupted = True
        console.print("interrupted; stopping")
    finally:
        with console.status("stopping the agent and the hub (SIGTERM) ..."):
            run.shutdown()
        signal.signal(signal.SIGTERM, previous)
    if error is not None:
        typer.echo(error.line(), err=True)
        raise typer.Exit(1)
    summary = summary_of(run, interrupted)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        print_summary(console, summary)
    if interrupted:
        raise typer.Exit(130)


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt
