"""`edgefleet hub serve`, `hub token create`, `hub policy ...` and `hub connection-string`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
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
    port: int = typer.Option(8080, "--port", help="TCP port of the REST API (plain HTTP)."),
    tls_port: int | None = typer.Option(
        None,
        "--tls-port",
        min=1,
        max=65535,
        help="Also serve the REST API over HTTPS on this port (what IoT Hub's SDKs call).",
    ),
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", help="HTTPS certificate (PEM); default: issued by the hub CA."
    ),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Private key of --tls-cert."),
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
        help="MQTT TLS port on --host, for devices (0: a free one, kept across restarts); "
        "with mosquitto or an external broker the hub's own front end, serving both dialects.",
    ),
    cert_port: int = typer.Option(0, "--cert-port", help="X.509 client-cert port (0: free)."),
    mqtt_ws_port: int = typer.Option(
        0,
        "--mqtt-ws-port",
        min=0,
        max=65535,
        help="MQTT over secure WebSockets on --host (IoT Hub's SDKs use 443 with "
        "websockets=True); embedded broker only; 0: off.",
    ),
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
    instance: str | None = typer.Option(
        None,
        "--instance",
        envvar="EDGEFLEET_HUB_INSTANCE",
        help="This process's name when several hub processes share one database and one "
        "external broker (each its own; see docs/scale-out.md).",
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        envvar="EDGEFLEET_HUB_WORKERS",
        help="Hub processes behind the same ports (PostgreSQL and an external broker; "
        "instances <--instance or host name>-0, -1, ...; docs/scale-out.md).",
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
    from cloud_hub.settings import HubSettings

    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")
    if tls_cert is not None and tls_port is None:
        fail("--tls-cert needs --tls-port")
    if tls_port is not None and tls_port == port:
        fail("--tls-port must differ from --port")
    if instance is not None:
        from cloud_hub.mqtt.subscriptions import validate_instance

        try:
            validate_instance(instance)
        except ValueError as exc:
            fail(f"--instance: {exc}")
        if not broker.startswith(("mqtt://", "mqtts://")):
            fail("--instance needs --broker mqtt://... or mqtts://...: one broker for every hub")

    settings = HubSettings(
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        port=port,
        tls_port=tls_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        public_host_name=public_host_name,
        log_level=log_level,
        deployment_tick_secs=deployment_tick,
        metrics_interval_secs=metrics_interval,
        **{
            "broker": broker,
            "mqtt_port": mqtt_port,
            "cert_port": cert_port,
            "mqtt_ws_port": mqtt_ws_port,
            "instance": instance,
        },
        **{
            "message_retention_hours": message_retention_hours,
            "message_retention_count": message_retention_count,
            "message_prune_interval": message_prune_interval,
        },
    )
    from cloud_hub.run import HubStartError, run_hub
    from cloud_hub.workers import supervise

    try:
        if workers > 1:
            sys.exit(supervise(settings, workers, access_log))
        started = run_hub(settings, access_log)
    except HubStartError as exc:
        fail(str(exc))
    if not started:
        sys.exit(1)


@token_app.command("create")
def token_create(
    data_dir: Path = DATA_DIR_OPT,
    database_url: str | None = DB_URL_OPT,
    scope: list[str] = typer.Option(
        ...,
        "--scope",
        help="registry:read, registry:write, service, deploy or admin (repeatable).",
    ),
    name: str = typer.Option("", "--name", help="A label for the token."),
) -> None:
    """Create an API token and print it (alone) on stdout."""
    from cloud_hub.errors import HubError

    hub = _open_offline(data_dir, database_url)
    try:
        token = hub.tokens.create(scope, name)
    except HubError as exc:
        fail(exc.message)
    finally:
        hub.close()
    typer.echo(token)


policy_app = typer.Typer(help="Shared access policies (IoT Hub's, for the service SDKs).")
hub_app.add_typer(policy_app, name="policy")


def _open_offline(data_dir: Path, database_url: str | None) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    from cloud_hub.hub import open_hub
    from cloud_hub.settings import HubSettings

    try:
        return open_hub(HubSettings(data_dir=data_dir, database_url=database_url))
    except (SQLAlchemyError, OSError) as exc:
        fail(f"cannot open the database: {str(exc).splitlines()[0]}")


@policy_app.command("list")
def policy_list(
    data_dir: Path = DATA_DIR_OPT,
    database_url: str | None = DB_URL_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print JSON, keys included."),
) -> None:
    """List the shared access policies and the scopes they grant."""
    hub = _open_offline(data_dir, database_url)
    try:
        policies = hub.policies.list()
    finally:
        hub.close()
    if as_json:
        typer.echo(json.dumps([_policy_json(p) for p in policies], indent=2))
    else:
        for policy in policies:
            typer.echo(f"{policy.name:<24} {' '.join(sorted(policy.scopes))}")


def _policy_json(policy: Any) -> dict[str, Any]:
    return {
        "name": policy.name,
        "permissions": sorted(policy.scopes),
        "primaryKey": policy.primary_key,
        "secondaryKey": policy.secondary_key,
    }


@policy_app.command("create")
def policy_create(
    name: str = typer.Argument(..., help="Policy name (SharedAccessKeyName)."),
    permissions: list[str] = typer.Option(
        ...,
        "--permissions",
        help="Scopes (registry:read, registry:write, service, deploy, admin) or IoT Hub rights "
        "(RegistryRead, RegistryWrite, ServiceConnect); comma-separated or repeated.",
    ),
    data_dir: Path = DATA_DIR_OPT,
    database_url: str | None = DB_URL_OPT,
) -> None:
    """Create a policy with two fresh keys and print it as JSON."""
    from cloud_hub.errors import HubError
    from cloud_hub.policies import parse_permissions

    hub = _open_offline(data_dir, database_url)
    try:
        policy = hub.policies.create(name, parse_permissions(permissions))
    except HubError as exc:
        fail(exc.message)
    finally:
        hub.close()
    typer.echo(json.dumps(_policy_json(policy), indent=2))


@policy_app.command("rotate")
def policy_rotate(
    name: str = typer.Argument(..., help="Policy name."),
    which: str = typer.Option("primary", "--which", help="primary, secondary or swap."),
    data_dir: Path = DATA_DIR_OPT,
    database_url: str | None = DB_URL_OPT,
) -> None:
    """Give a policy a new primary or secondary key, or swap the two; running hubs honour it
    within seconds."""
    from cloud_hub.errors import HubError

    hub = _open_offline(data_dir, database_url)
    try:
        policy = hub.policies.rotate(name, which)
    except HubError as exc:
        fail(exc.message)
    finally:
        hub.close()
    typer.echo(json.dumps(_policy_json(policy), indent=2))


@hub_app.command("connection-string")
def connection_string(
    policy_name: str = typer.Option("iothubowner", "--policy", help="Shared access policy."),
    secondary: bool = typer.Option(False, "--secondary", help="Use the secondary key."),
    host_name: str | None = typer.Option(
        None,
        "--host-name",
        help="HostName to print (host or host:port); default: what `hub serve` recorded in "
        "the data directory (public host name and --tls-port).",
    ),
    data_dir: Path = DATA_DIR_OPT,
    database_url: str | None = DB_URL_OPT,
) -> None:
    """Print a service connection string (IoT Hub's) for a shared access policy."""
    from cloud_hub import endpoint
    from cloud_hub.errors import HubError

    if host_name is None:
        recorded = endpoint.recorded(data_dir) or {}
        if not recorded.get("tlsPort"):
            fail(
                "no HTTPS endpoint is recorded in the data directory: run `edgefleet hub serve "
                "--tls-port PORT` once, or pass --host-name HOST[:PORT]"
            )
        host_name = endpoint.service_host_name(str(recorded["hostName"]), int(recorded["tlsPort"]))
    hub = _open_offline(data_dir, database_url)
    try:
        policy = hub.policies.get(policy_name)
    except HubError as exc:
        fail(exc.message)
    finally:
        hub.close()
    key = policy.secondary_key if secondary else policy.primary_key
    typer.echo(endpoint.service_connection_string(host_name, policy.name, key))
