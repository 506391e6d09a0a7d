"""``edgefleet deployment validate|genconfig``: deployment manifests and templates on disk,
checked and expanded locally (no hub needed)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from cloud_hub.client_cli.common import JSON_OPT, print_json
from edgefleet.cli_apps import deployment_app, fail
from edgefleet.deployment_check import Verdict, check_deployment
from edgefleet.genconfig import genconfig, load_env_file
from edgefleet.manifest import ManifestError

ENV_FILE_OPT = typer.Option(
    None, "--env-file", help="A .env file of template variables (the environment overrides it)."
)


def read_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            fail(f"{path} is neither JSON nor YAML")
    if not isinstance(doc, dict):
        fail(f"{path} does not hold a JSON object")
    return doc


def template_variables(env_file: Path | None) -> dict[str, str]:
    """iotedgedev's order: the .env file, then the process environment on top."""
    values: dict[str, str] = {}
    if env_file is not None:
        if not env_file.is_file():
            fail(f"no such env file: {env_file}")
        values.update(load_env_file(env_file))
    values.update(os.environ)
    return values


def _print_verdict(verdict: Verdict, path: Path) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    if verdict.valid:
        console.print(f"[green]valid[/green] {verdict.kind} deployment: {escape(str(path))}")
    else:
        console.print(
            f"[red]invalid[/red] {verdict.kind} deployment: {escape(str(path))} "
            f"({len(verdict.errors)} error{'s' if len(verdict.errors) != 1 else ''})"
        )
    for label, findings in (
        ("[red]error[/red]", verdict.errors),
        ("[yellow]warning[/yellow]", verdict.warnings),
    ):
        for finding in findings:
            where = escape(finding.path or "(document)")
            console.print(f"  {label} {where}: {escape(finding.message)}")


@deployment_app.command("validate")
def deployment_validate(
    file: Path = typer.Argument(
        ..., help="Deployment manifest, template or configuration (JSON or YAML)."
    ),
    layered: bool | None = typer.Option(
        None, "--layered/--base", help="Check as a layered / base deployment (default: detect)."
    ),
    env_file: Path | None = ENV_FILE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Check a deployment as IoT Hub would: exit 0 when valid, 1 when not."""
    doc = read_document(file)
    verdict = check_deployment(doc, layered=layered, variables=template_variables(env_file))
    if as_json:
        print_json(verdict.to_json())
    else:
        _print_verdict(verdict, file)
    raise typer.Exit(0 if verdict.valid else 1)


@deployment_app.command("genconfig")
def deployment_genconfig(
    template: Path = typer.Argument(..., help="deployment.template.json"),
    env_file: Path | None = ENV_FILE_OPT,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write here (default: stdout)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Compact JSON (stdout), or a JSON summary with -o."
    ),
) -> None:
    """Expand a deployment template into a deployment (iotedgedev's genconfig)."""
    doc = read_document(template)
    try:
        deployment = genconfig(doc, template_variables(env_file))
    except ManifestError as exc:
        fail(str(exc))
    verdict = check_deployment(deployment)
    if not verdict.valid:
        for finding in verdict.errors:
            typer.echo(f"error: {finding.path}: {finding.message}", err=True)
        raise typer.Exit(1)
    text = json.dumps(deployment, indent=None if as_json and output is None else 4)
    if output is None:
        sys.stdout.write(text + "\n")
        return
    output.write_text(text + "\n", encoding="utf-8")
    if as_json:
        print_json({"output": str(output), "kind": verdict.kind, "valid": True})
    else:
        typer.echo(f"wrote {verdict.kind} deployment to {output}", err=True)
