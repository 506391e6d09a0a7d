"""Entry point of the ``edgefleet`` command.

Importing a feature's CLI module registers its commands on the groups of ``edgefleet.cli_apps``;
this module is where every feature comes together, so it alone imports them all.
"""

import typer

import cloud_hub.cli
import cloud_hub.client_cli.agent_config
import cloud_hub.client_cli.bulk
import cloud_hub.client_cli.deployment_files
import cloud_hub.client_cli.deployments
import cloud_hub.client_cli.devices
import cloud_hub.client_cli.queries
import cloud_hub.client_cli.twins
import cloud_hub.query.cli
import composition.bench.commands
import composition.chaos.cli
import composition.demo.command
import composition.hostile.cli
import edge_agent.cli
import edge_agent.edgehub.cli
import edge_agent.messaging_cli
import modules.accelerators.fpga.cli
import modules.featurizer.cli
import modules.featurizer.import_cli
import modules.packaging.cli
import modules.scoring.cli
from edgefleet import __version__
from edgefleet.cli_apps import app

FEATURE_CLIS = (
    cloud_hub.cli,
    cloud_hub.client_cli.agent_config,
    cloud_hub.client_cli.bulk,
    cloud_hub.client_cli.deployment_files,
    cloud_hub.client_cli.deployments,
    cloud_hub.client_cli.devices,
    cloud_hub.client_cli.queries,
    cloud_hub.client_cli.twins,
    cloud_hub.query.cli,
    composition.bench.commands,
    composition.chaos.cli,
    composition.demo.command,
    composition.hostile.cli,
    edge_agent.cli,
    edge_agent.edgehub.cli,
    edge_agent.messaging_cli,
    modules.accelerators.fpga.cli,
    modules.featurizer.cli,
    modules.packaging.cli,
    modules.featurizer.import_cli,
    modules.scoring.cli,
)


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
