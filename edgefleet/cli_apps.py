"""The typer command groups of the `edgefleet` CLI.

Feature modules attach their commands to these groups (``@device_app.command("create")``);
``composition.cli`` imports those modules so the commands register. A CLI module imports its heavy
dependencies (fastapi, docker, onnxruntime, torch) inside the command bodies, so that an edge device
with only ``edgefleet[agent]`` installed can still run ``edgefleet --help`` and the agent commands.
"""

from typing import NoReturn

import typer

app = typer.Typer(
    name="edgefleet",
    help="Self-hostable edge IoT runtime and fleet manager.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _group(name: str, help_text: str) -> typer.Typer:
    group = typer.Typer(help=help_text, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


hub_app = _group("hub", "Run and administer the cloud hub.")
device_app = _group("device", "Device identities, credentials and simulated devices.")
twin_app = _group("twin", "Read and patch device and module twins.")
deployment_app = _group(
    "deployment", "Fleet deployments (IoT Hub configurations): validate, create, roll out."
)
query_app = _group("query", "IoT Hub query language tools.")
route_app = _group("route", "IoT Edge route language tools.")
models_app = _group("models", "Build, quantize and run featurizer models.")
fpga_app = _group("fpga-emulator", "The emulated FPGA accelerator device.")
agent_app = _group("agent", "The edge agent daemon.")
bench_app = _group("bench", "Benchmarks that print figures (use --json for scripts).")
chaos_app = _group("chaos", "Fault-injection scenarios judged by an independent checker (root).")


def fail(message: str, code: int = 1) -> NoReturn:
    """End a command with one line on stderr and a non-zero exit code (never a traceback)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
