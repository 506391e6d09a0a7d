"""``edgefleet models package``: a scoring image (model + server + wheels), pushed if asked."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from edgefleet.cli_apps import fail, models_app

MODEL_DIR_HELP = "Model store directory (default: $EDGEFLEET_MODEL_DIR or the user data dir)."


@models_app.command("package")
def package(
    model: str = typer.Option(
        ..., "--model", help="Model in the store: a classifier or a detector (NAME[:VERSION])."
    ),
    image: str = typer.Option(..., "--image", help="Image reference REGISTRY/NAME:TAG."),
    head: str | None = typer.Option(
        None, "--head", help="Classifier head to ship (default: default; none for a detector)."
    ),
    entry_script: Path | None = typer.Option(
        None, "--entry-script", help="An Azure ML score.py, served by azmlinfsrv behind the keys."
    ),
    requirements: list[Path] = typer.Option(
        [], "--requirements", help="pip requirements file of the entry script (repeatable)."
    ),
    pip: list[str] = typer.Option(
        [], "--pip", help="A package the entry script needs (repeatable)."
    ),
    accelerator: str = typer.Option(
        "cpu", "--accelerator", help="cpu (also drives a mapped FPGA emulator) or gpu (CUDA)."
    ),
    precision: str = typer.Option(
        "fp32", "--precision", help="Precision shipped (a detector: of each of its networks)."
    ),
    push: bool = typer.Option(False, "--push", help="Push the image to its registry."),
    registry_user: str | None = typer.Option(None, "--registry-user"),
    registry_password: str | None = typer.Option(
        None, "--registry-password", envvar="EDGEFLEET_REGISTRY_PASSWORD"
    ),
    fpga_socket: Path | None = typer.Option(
        None,
        "--fpga-socket",
        help="Host socket of the FPGA emulator for the snippet (default: the fpga0 device's).",
    ),
    cpu_only: bool = typer.Option(False, "--cpu-only", help="Snippet without the FPGA mapping."),
    module: str = typer.Option("scoring", "--module", help="Module name in the snippet."),
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Build a Docker image with the model, `edgefleet serve` and its wheels (no registry pulls)."""
    from modules.featurizer.cli import step_status
    from modules.packaging.context import PackageError
    from modules.packaging.requirements import gather, requirement_set, runtime_requirements

    if entry_script is not None and not entry_script.is_file():
        fail(f"entry script {entry_script} does not exist")
    if (requirements or pip) and entry_script is None:
        fail("--requirements and --pip are for an --entry-script's own packages")
    if accelerator == "gpu" and fpga_socket is not None:
        fail("--fpga-socket maps the FPGA emulator into a cpu image, not a gpu one")
    try:
        runtime_requirements(accelerator)
        wanted = requirement_set(gather(requirements, pip))
    except PackageError as exc:
        fail(str(exc))
    if push and bool(registry_user) != bool(registry_password):
        fail("--registry-user and --registry-password go together")
    with step_status(not as_json) as say:
        try:
            result = _package(
                model, image, head, entry_script, precision, push, registry_user,
                registry_password, model_dir, say, accelerator, wanted,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - every failure is one line, never a traceback
            from modules.packaging.base_image import BaseImageError

            known = isinstance(exc, PackageError | BaseImageError | OSError)
            fail(str(exc) if known else f"{type(exc).__name__}: {exc}")
    result["snippet"] = _snippet(
        image, registry_user, fpga_socket, cpu_only or accelerator == "gpu", module, accelerator
    )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for note in result["notes"]:
        typer.echo(f"note: {note}", err=True)
    typer.echo(
        f"built {image} ({result['sizeBytes'] / 1e6:.0f} MB) in {result['seconds']['total']} s"
        + (" and pushed" if push else "")
    )
    typer.echo("manifest snippet ($edgeAgent properties.desired):")
    typer.echo(json.dumps(result["snippet"], indent=2))


def _snippet(
    image: str,
    user: str | None,
    fpga_socket: Path | None,
    cpu_only: bool,
    module: str,
    accelerator: str,
) -> dict[str, Any]:
    from modules.packaging.docker_ops import split_reference
    from modules.packaging.snippet import manifest_snippet

    socket = None
    if not cpu_only:
        from modules.accelerators.fpga.server import default_socket_path

        socket = fpga_socket or default_socket_path("fpga0")
    return manifest_snippet(
        image,
        split_reference(image)[0],
        user,
        module=module,
        fpga_socket=socket,
        gpu=accelerator == "gpu",
    )


def _package(
    model: str,
    image: str,
    head: str | None,
    entry_script: Path | None,
    precision: str,
    push: bool,
    user: str | None,
    password: str | None,
    model_dir: Path | None,
    say: Any,
    accelerator: str,
    requirements: tuple[str, ...],
) -> dict[str, Any]:
    import modules
    from modules.accelerators.model_store import ModelStore, StoreError
    from modules.packaging import docker_ops
    from modules.packaging.context import (
        ImageSpec,
        PackageError,
        assemble,
        build_dir,
        resolve_head,
        trimmed_manifest,
    )
    from modules.packaging.runtime_image import ensure_runtime

    started = time.monotonic()
    store = ModelStore(model_dir)
    try:
        manifest = store.get(model)
        head = resolve_head(manifest, head)
        trimmed_manifest(manifest, precision, head, accelerator)
    except StoreError as exc:
        raise PackageError(str(exc)) from None
    client = docker_ops.docker_client()
    registry = docker_ops.split_reference(image)[0]
    if push and user and password:
        docker_ops.check_login(client, registry, user, password)
    script = entry_script.name if entry_script else None
    spec = ImageSpec(model, head, precision, script, accelerator, requirements)
    seconds: dict[str, float] = {}
    mark = time.monotonic()
    notes: list[str] = []
    base, runtime = ensure_runtime(
        client,
        entry_script is not None,
        say,
        accelerator=accelerator,
        requirements=requirements,
        note=notes.append,
    )
    seconds["runtime"] = round(time.monotonic() - mark, 1)
    mark = time.monotonic()
    with build_dir() as ctx:
        assemble(
            ctx,
            runtime=runtime,
            spec=spec,
            store=store,
            repo_root=Path(modules.__file__).resolve().parent.parent,
            entry_script=entry_script,
            say=say,
        )
        seconds["context"] = round(time.monotonic() - mark, 1)
        mark = time.monotonic()
        image_id = docker_ops.build_image(client, ctx, image, say)
        seconds["build"] = round(time.monotonic() - mark, 1)
    digest = ""
    if push:
        mark = time.monotonic()
        digest = docker_ops.push_image(client, image, user, password, say)
        seconds["push"] = round(time.monotonic() - mark, 1)
    seconds["total"] = round(time.monotonic() - started, 1)
    return {
        "image": image,
        "imageId": image_id,
        "baseImage": base,
        "runtimeImage": runtime,
        "sizeBytes": docker_ops.image_size(client, image),
        "pushed": push,
        "digest": digest,
        "model": model,
        "head": head,
        "precision": precision,
        "entryScript": spec.entry_script,
        "accelerator": accelerator,
        "requirements": list(requirements),
        "notes": notes,
        "seconds": seconds,
    }
