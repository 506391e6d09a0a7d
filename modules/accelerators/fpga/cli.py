"""``edgefleet fpga-emulator ...``: serve the emulated card, query it, evaluate BFP accuracy."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from edgefleet.cli_apps import fail, fpga_app


def emit(data: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        for line in lines:
            typer.echo(line)


@fpga_app.command("serve")
def serve_cmd(
    device: str = typer.Option("fpga0", "--device", help="Device name (socket file name)."),
    socket_path: Path | None = typer.Option(
        None,
        "--socket",
        help="Socket path (default: the device dir, e.g. /run/edgefleet/fpga0.sock).",
    ),
    model_dir: Path | None = typer.Option(None, "--model-dir", help="Model store to load from."),
    config: Path | None = typer.Option(None, "--config", help="Card config YAML (cycle model)."),
    flash_ms: float | None = typer.Option(None, "--flash-ms", help="Override the flash delay."),
    threads: int | None = typer.Option(None, "--threads", help="Host compute threads."),
    load: str | None = typer.Option(None, "--load", help="Flash this model at start."),
    precision: str = typer.Option("msfp9", "--precision", help="Precision for --load."),
    parent_pid: int | None = typer.Option(
        None, "--parent-pid", help="Stop when this parent process is gone."
    ),
) -> None:
    """Run the emulated FPGA card as a device process serving a local UNIX socket."""
    from modules.accelerators.fpga.server import DeviceError, serve

    try:
        code = serve(
            device,
            socket_path,
            model_dir,
            config,
            flash_ms,
            threads,
            preload=load,
            precision=precision,
            parent_pid=parent_pid,
        )
    except DeviceError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot serve {device}: {exc}")
    raise typer.Exit(code)


def _ask(device: str, socket_path: Path | None, call: Callable[[Any], Any]) -> dict[str, Any]:
    """One request to the card (``call`` gets the open device); the command fails with the
    device's error. The answer's ``ok`` flag is dropped."""
    from modules.accelerators.fpga.client import FpgaDevice, FpgaDeviceError, resolve_device_path

    try:
        with FpgaDevice(socket_path or resolve_device_path(device)) as dev:
            answer: dict[str, Any] = call(dev)
    except FpgaDeviceError as exc:
        fail(str(exc))
    answer.pop("ok", None)
    return answer


@fpga_app.command("status")
def status_cmd(
    device: str = typer.Option("fpga0", "--device"),
    socket_path: Path | None = typer.Option(None, "--socket"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show the card's loaded model, precision and counters."""
    st = _ask(device, socket_path, lambda dev: dev.status())
    c = st["counters"]
    emit(
        st,
        as_json,
        [
            f"device {st['device']} (pid {st['pid']}, card {st['card']['name']})",
            f"  model: {st['model'] or '-'}  precision: {st['precision'] or '-'}",
            f"  loads {c['loads']}  inferences {c['inferences']}  images {c['images']}  "
            f"errors {c['errors']}  refused {c['refused']}",
        ],
    )


@fpga_app.command("load")
def load_cmd(
    model: str = typer.Argument(
        ..., help="resnet50, resnet152, vgg16, densenet121, efficientnet-lite0"
    ),
    precision: str = typer.Option("msfp9", "--precision", help="bfp8, msfp9 or msfp8"),
    device: str = typer.Option("fpga0", "--device"),
    socket_path: Path | None = typer.Option(None, "--socket"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Flash a featurizer onto the card (replaces the loaded one)."""
    info = _ask(device, socket_path, lambda dev: dev.load(model, precision))
    emit(
        info,
        as_json,
        [f"loaded {info['model']} {info['precision']} (flash {info['flash_ms']} ms)"],
    )
