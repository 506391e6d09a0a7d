"""Entry point of the `edgefleet` command: imports every feature's CLI module, then runs."""

import importlib

import typer

from edgefleet import __version__
from edgefleet.cli_apps import app

# Feature CLI modules; each registers its commands on the groups in edgefleet.cli_apps.
CLI_MODULES: list[str] = [
    # one line per feature CLI module, e.g. "cloud_hub.cli",
    "cloud_hub.cli",
    "cloud_hub.cli_client",
    "cloud_hub.query.cli",
    "modules.featurizer.cli",
    "edge_agent.cli",
    "edge_agent.edgehub.cli",
    "edge_agent.accelerators.fpga.cli",
    "edgefleet.demo",
    "edge_agent.messaging_cli",
]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        is_eager=True,
        callback=_print_version,
    ),
) -> None:
    """Self-hostable edge IoT runtime and fleet manager."""


def load_commands() -> None:
    for name in CLI_MODULES:
        importlib.import_module(name)


def main() -> None:
    load_commands()
    app()


if __name__ == "__main__":
    main()
