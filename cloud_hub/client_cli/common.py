"""What the CLI commands that talk to a running hub share: options, the client, output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from edgefleet.cli_apps import fail
from edgefleet.hubclient import ENV_HUB, ENV_TOKEN, HubClient, HubClientError

HUB_OPT = typer.Option(None, "--hub", envvar=ENV_HUB, help="Hub base URL.")
TOKEN_OPT = typer.Option(None, "--token", envvar=ENV_TOKEN, help="Hub API token.")
JSON_OPT = typer.Option(False, "--json", help="Print JSON instead of a table.")
MODULE_OPT = typer.Option(None, "--module", "-m", help="A module of the device.")


@contextmanager
def hub_client(hub: str | None, token: str | None) -> Iterator[HubClient]:
    try:
        with HubClient(hub, token) as client:
            yield client
    except HubClientError as exc:
        fail(str(exc))


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=False))


def table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    Console().print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(doc, dict) or not doc:
        return {prefix: doc}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


def show_fields(doc: dict[str, Any], title: str) -> None:
    flat = _flatten(doc)
    table([{"field": k, "value": v} for k, v in flat.items()], ["field", "value"], title)


def parse_json_arg(value: str, what: str) -> Any:
    if value.startswith("@"):
        try:
            value = Path(value[1:]).read_text()
        except OSError as exc:
            fail(f"{what}: cannot read {value[1:]}: {exc.strerror}")
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        fail(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")


def quote_segment(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")
