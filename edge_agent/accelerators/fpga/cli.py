"""``edgefleet fpga-emulator ...``: serve the emulated card, query it, evaluate BFP accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from edgefleet.cli_apps import bench_app, fpga_app


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _emit(data: dict[str, Any], as_json: bool, lines: list[str]) -> None:
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
    from edge_agent.accelerators.fpga.server import DeviceError, serve

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
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot serve {device}: {exc}")
    raise typer.Exit(code)


def _device(device: str, socket_path: Path | None) -> Any:
    from edge_agent.accelerators.fpga.client import FpgaDevice, resolve_device_path

    return FpgaDevice(socket_path or resolve_device_path(device))


@fpga_app.command("status")
def status_cmd(
    device: str = typer.Option("fpga0", "--device"),
    socket_path: Path | None = typer.Option(None, "--socket"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show the card's loaded model, precision and counters."""
    from edge_agent.accelerators.fpga.client import FpgaDeviceError

    try:
        with _device(device, socket_path) as dev:
            st = dev.status()
    except FpgaDeviceError as exc:
        _fail(str(exc))
    st.pop("ok", None)
    c = st["counters"]
    _emit(
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
    from edge_agent.accelerators.fpga.client import FpgaDeviceError

    try:
        with _device(device, socket_path) as dev:
            info = dev.load(model, precision)
    except FpgaDeviceError as exc:
        _fail(str(exc))
    info.pop("ok", None)
    _emit(
        info,
        as_json,
        [f"loaded {info['model']} {info['precision']} (flash {info['flash_ms']} ms)"],
    )


@bench_app.command("fpga-host")
def bench_fpga_host(
    model: str = typer.Option("efficientnet-lite0", "--model"),
    precision: str = typer.Option("bfp8", "--precision", help="bfp8, msfp9 or msfp8"),
    iterations: int = typer.Option(20, "--iterations"),
    threads: int = typer.Option(1, "--threads", help="1 gives load-robust CPU-time ratios."),
    model_dir: Path | None = typer.Option(None, "--model-dir"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Host cost of the FPGA emulator's BFP graph vs the fp32 graph (wall and CPU time)."""
    from rich.progress import Progress

    from edge_agent.accelerators.bfp import UnknownFormatError
    from edge_agent.accelerators.fpga.hostbench import host_overhead
    from edge_agent.accelerators.fpga.rewrite import RewriteError
    from edge_agent.accelerators.store import ModelStore, StoreError

    try:
        with Progress(transient=True, disable=as_json) as bar:
            task = bar.add_task("fpga-host", total=None)
            report = host_overhead(
                ModelStore(model_dir),
                model,
                precision,
                iterations,
                threads,
                progress=lambda msg: bar.update(task, description=msg),
            )
    except (StoreError, UnknownFormatError, RewriteError) as exc:
        _fail(str(exc))
    b1, b8 = report["host_vs_fp32_batch1"], report["host_vs_fp32_batch8"]
    ms = report["ms"]
    _emit(
        report,
        as_json,
        [
            f"{model} {precision}: {report['quantized_layers']} layers in BFP, "
            f"{threads} thread(s), {iterations} rounds",
            f"  batch 1: fp32 {ms['fp32_batch1']['wall_p50']} ms, "
            f"BFP {ms['bfp_batch1']['wall_p50']} ms -> {b1['wall']}x wall, {b1['cpu']}x CPU time",
            f"  batch 8: {b8['wall']}x wall, {b8['cpu']}x CPU time (BFP image by image)",
        ],
    )
