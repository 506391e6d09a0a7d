"""``edgefleet query "SELECT ..."`` (``query run``) against a running hub."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from cloud_hub.client_cli.common import (
    HUB_OPT,
    JSON_OPT,
    TOKEN_OPT,
    hub_client,
    print_json,
    table,
)
from edgefleet.cli_apps import query_app


class _DefaultRunGroup(TyperGroup):
    """`edgefleet query "SELECT ..."` means `edgefleet query run "SELECT ..."`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


query_app.info.cls = _DefaultRunGroup


@query_app.command("run")
def query_run(
    query: str = typer.Argument(..., help="SELECT ... FROM devices [WHERE ...]"),
    page_size: int = typer.Option(1000, "--page-size", help="Items per request."),
    hub: str | None = HUB_OPT,
    token: str | None = TOKEN_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Run a query on the hub (also: `edgefleet query "SELECT ..."`)."""
    with hub_client(hub, token) as client:
        rows = client.query(query, page_size)
    if as_json:
        print_json(rows)
        return
    if rows and all(isinstance(r, dict) and "properties" in r for r in rows):
        view = [
            {
                "deviceId": r.get("deviceId"),
                "moduleId": r.get("moduleId"),
                "status": r.get("status"),
                "connectionState": r.get("connectionState"),
                "tags": r.get("tags"),
                "version": r.get("version"),
            }
            for r in rows
        ]
        columns = ["deviceId", "status", "connectionState", "tags", "version"]
        if any(v["moduleId"] for v in view):
            columns.insert(1, "moduleId")
        table(view, columns, f"{len(rows)} twins")
        return
    columns = []
    for row in rows:
        for key in row if isinstance(row, dict) else ["value"]:
            if key not in columns:
                columns.append(key)
    dict_rows = [r if isinstance(r, dict) else {"value": r} for r in rows]
    table(dict_rows, columns, f"{len(rows)} rows")
