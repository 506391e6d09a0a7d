"""``edgefleet fpga-emulator ...``: serve the emulated card, query it, evaluate BFP accuracy."""

from __future__ import annotations

import json
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


def _device(device: str, socket_path: Path | None) -> Any:
    from modules.accelerators.fpga.client import FpgaDevice, resolve_device_path

    return FpgaDevice(socket_path or resolve_device_path(device))


@fpga_app.command("status")
def status_cmd(
    device: str = typer.Option("fpga0", "--device"),
    socket_path: Path | None = typer.Option(None, "--socket"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show the card's loaded model, precision and counters."""
    from modules.accelerators.fpga.client import FpgaDeviceError

    try:
        with _device(device, socket_path) as dev:
            st = dev.status()
    except FpgaDeviceError as exc:
        fail(str(exc))
    st.pop("ok", None)
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
    from modules.accelerators.fpga.client import FpgaDeviceError

    try:
        with _device(device, socket_path) as dev:
            info = dev.load(model, precision)
    except FpgaDeviceError as exc:
        fail(str(exc))
    info.pop("ok", None)
    emit(
        info,
        as_json,
        [f"loaded {info['model']} {info['precision']} (flash {info['flash_ms']} ms)"],
    )
