"""`edgefleet hub serve` and `edgefleet hub token create`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from cloud_hub.broker.preflight import DEFAULT_MQTT_PORT
from edgefleet.cli_apps import fail, hub_app

DATA_DIR_OPT = typer.Option(
    Path("./hub-data"), "--data-dir", envvar="EDGEFLEET_HUB_DATA_DIR", help="Hub state directory."
)
DB_URL_OPT = typer.Option(
    None,
    "--database-url",
    envvar="EDGEFLEET_DATABASE_URL",
    help="SQLAlchemy URL (postgresql+psycopg://...); default SQLite <data-dir>/hub.db.",
)

token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
hub_app.add_typer(token_app, name="token")


@hub_app.command("serve")
def serve(
    data_dir: Path = DATA_DIR_OPT,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8080, "--port", help="TCP port of the REST API."),
    database_url: str | None = DB_URL_OPT,
    public_host_name: str | None = typer.Option(
        None, "--public-host-name", help="Host name in connection strings (default: --host)."
    ),
    log_level: str = typer.Option("info", "--log-level"),
    broker: str = typer.Option(
        "embedded", "--broker", help="embedded (amqtt), mosquitto, or mqtt(s)://host:port."
    ),
    mqtt_port: int = typer.Option(
        DEFAULT_MQTT_PORT,
        "--mqtt-port",
        min=0,
        max=65535,
        help="MQTT TLS port on --host, for devices (0: a free one, kept across restarts).",
    ),
    cert_port: int = typer.Option(0, "--cert-port", help="X.509 client-cert port (0: free)."),
    access_log: bool = typer.Option(
        False, "--access-log", help="Log every request (off by default: it costs throughput)."
    ),
    message_retention_hours: float = typer.Option(
        168.0,
        "--message-retention-hours",
        min=0,
        envvar="EDGEFLEET_MESSAGE_RETENTION_HOURS",
        help="Delete stored telemetry older than this (0: keep forever).",
    ),
    message_retention_count: int = typer.Option(
        0,
        "--message-retention-count",
        min=0,
        envvar="EDGEFLEET_MESSAGE_RETENTION_COUNT",
        help="Keep at most the newest N stored messages per device (0: unlimited).",
    ),
    message_prune_interval: float = typer.Option(
        300.0,
        "--message-prune-interval",
        min=0.01,
        envvar="EDGEFLEET_MESSAGE_PRUNE_INTERVAL",
        help="Seconds between retention passes (one also runs at start).",
    ),
    deployment_tick: float = typer.Option(
        1.0,
        "--deployment-tick",
        min=0.05,
        envvar="EDGEFLEET_DEPLOYMENT_TICK",
        help="Seconds between rollout steps of the deployment worker.",
    ),
    metrics_interval: float = typer.Option(
        2.0,
        "--metrics-interval",
        min=0.05,
        envvar="EDGEFLEET_METRICS_INTERVAL",
        help="Deployment metrics refresh at most this often (seconds).",
    ),
) -> None:
    """Run the hub (REST API and background services) until SIGTERM or Ctrl-C."""
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from cloud_hub.app import create_app
    from cloud_hub.broker.preflight import mqtt_port_problem
    from cloud_hub.hub import open_hub
    from cloud_hub.settings import HubSettings

    settings = HubSettings(
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        port=port,
        public_host_name=public_host_name,
        log_level=log_level,
        deployment_tick_secs=deployment_tick,
        metrics_interval_secs=metrics_interval,
        **{"broker": broker, "mqtt_port": mqtt_port, "cert_port": cert_port},
        **{
            "message_retention_hours": message_retention_hours,
            "message_retention_count": message_retention_count,
            "message_prune_interval": message_prune_interval,
        },
    )
    try:
        hub = open_hub(settings)
    except (SQLAlchemyError, OSError) as exc:
        fail(f"cannot open the database: {str(exc).splitlines()[0]}")
    problem = mqtt_port_problem(data_dir, broker, host, mqtt_port)
    if problem:
        hub.close()
        fail(problem)
    app = create_app(hub=hub)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=10,
        access_log=access_log,
    )
    server = _server_class()(config)
    ui = hub.extensions.get("ui")
    if ui is not None:  # open dashboard streams end at once, not after the graceful timeout
        server.exit_hooks.append(ui.stopping.set)
    try:
        server.run()
    finally:
        hub.close()
    if not server.started:
        sys.exit(1)


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after a graceful stop; we exit 0 instead.
        ``exit_hooks`` run when the stop begins (before open requests are drained)."""

        exit_hooks: list[Callable[[], None]]

        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            self.exit_hooks = []

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()
            for hook in self.exit_hooks:
                hook()

    return Server


@token_app.command("create")
def token_create(
    data_dir: Path = DATA_DIR_OPT,
    database_url: str | None = DB_URL_OPT,
    scope: list[str] = typer.Option(
        ...,
        "--scope",
        help="registry:read, registry:write, deploy or admin (repeatable).",
    ),
    name: str = typer.Option("", "--name", help="A label for the token."),
) -> None:
    """Create an API token and print it (alone) on stdout."""
    from sqlalchemy.exc import SQLAlchemyError

    from cloud_hub.errors import HubError
    from cloud_hub.hub import open_hub
    from cloud_hub.settings import HubSettings

    try:
        hub = open_hub(HubSettings(data_dir=data_dir, database_url=database_url))
    except (SQLAlchemyError, OSError) as exc:
        fail(f"cannot open the database: {str(exc).splitlines()[0]}")
    try:
        token = hub.tokens.create(scope, name)
    except HubError as exc:
        fail(exc.message)
    finally:
        hub.close()
    typer.echo(token)
