"""``edgefleet serve``: the scoring server outside a deployment (heavy imports inside)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import typer

from edgefleet.cli_apps import app, fail

DEVICE_HELP = "FPGA emulator device name or socket path (fpga-emulator only)."
MODEL_DIR_HELP = "Model store directory (default: $EDGEFLEET_MODEL_DIR or the user data dir)."


@app.command("serve")
def serve(
    model: str = typer.Option(
        ..., "--model", help="Model in the store: a classifier or a detector (face-detector)."
    ),
    head: str = typer.Option("default", "--head", help="Classifier head (default: ImageNet)."),
    accelerator: str = typer.Option("cpu", "--accelerator", help="cpu, gpu or fpga-emulator."),
    precision: str | None = typer.Option(
        None, "--precision", help="fp32, int8, fp16 (gpu), bfp8... (default: bfp8 on the FPGA)."
    ),
    device: str | None = typer.Option(None, "--device", help=DEVICE_HELP),
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Address both front ends listen on."),
    grpc_port: int = typer.Option(
        50051, "--grpc-port", help="TF-Serving gRPC port (0: any free port, -1: off)."
    ),
    http_port: int = typer.Option(
        5001, "--http-port", help="HTTP port: /score and /v2 (0: any free port, -1: off)."
    ),
    keys: str | None = typer.Option(
        None,
        "--keys",
        help="Accepted keys K1,K2 (default: $SCORING_PRIMARY_KEY, $SCORING_SECONDARY_KEY; "
        "none: no key needed).",
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="gRPC TLS certificate chain."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="gRPC TLS private key."),
    workers: int = typer.Option(1, "--workers", min=1, help="Requests computed at once."),
    queue: int = typer.Option(8, "--queue", min=0, help="Requests waiting; more get 429."),
    max_image_bytes: int = typer.Option(
        8 * 1024 * 1024, "--max-image-bytes", min=1, help="Largest encoded image accepted."
    ),
    top_k: int = typer.Option(5, "--top-k", min=1, help="Classes in a POST /score answer."),
    score_upstream: str | None = typer.Option(
        None,
        "--score-upstream",
        help="Forward POST /score (after the key check) to this HTTP server, e.g. azmlinfsrv.",
    ),
) -> None:
    """Run the scoring server: TF-Serving gRPC, Open Inference Protocol v2 and POST /score."""
    from modules.accelerators.model_store import StoreError
    from modules.accelerators.session import AcceleratorError
    from modules.scoring.core import Limits, ServingCore
    from modules.scoring.detector import DetectorScorer, open_scoring_model
    from modules.scoring.keys import Keys
    from modules.scoring.scorer import ScoringConfig
    from modules.scoring.server import Listen, Servers

    config = ScoringConfig(
        model=model,
        accelerator=accelerator,
        precision=precision or ("bfp8" if accelerator == "fpga-emulator" else "fp32"),
        device=device,
        model_dir=str(model_dir) if model_dir else None,
        head=head,
        top_k=top_k,
    )
    listen = Listen(
        host=host,
        grpc_port=None if grpc_port < 0 else grpc_port,
        http_port=None if http_port < 0 else http_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        score_upstream=score_upstream,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        scorer = open_scoring_model(config)
    except (StoreError, AcceleratorError, ValueError) as exc:
        fail(f"cannot open {model} on {accelerator}: {exc}")
    if scorer.session.notice:
        typer.echo(f"warning: {scorer.session.notice}", err=True)
    if scorer.flagged:
        measured = (
            "matched fewer of fp32's boxes on held-out images"
            if isinstance(scorer, DetectorScorer)
            else "agreed with fp32 on fewer held-out images"
        )
        typer.echo(
            f"warning: {model} {scorer.config.precision} {measured} than the threshold when it "
            "was quantized (see `edgefleet models list`)",
            err=True,
        )
    try:
        core = ServingCore(scorer, Keys.parse(keys), Limits(workers, queue, max_image_bytes))
        servers = Servers(core, listen)
    except (OSError, ValueError) as exc:
        scorer.close()
        fail(str(exc))
    typer.echo(_banner(scorer, servers, host, tls_cert is not None), err=False)
    try:
        stop.wait()
    finally:
        servers.stop()
        scorer.close()
    typer.echo("stopped")


def _banner(scorer: Any, servers: Any, host: str, tls: bool) -> str:
    from modules.scoring.detector import DetectorScorer

    what = "detector" if isinstance(scorer, DetectorScorer) else f"head {scorer.config.head}"
    parts = [
        f"serving {scorer.config.model} ({what}, {scorer.config.precision}) "
        f"on {scorer.session.accelerator} [{scorer.session.engine}]"
    ]
    if servers.grpc_port is not None:
        parts.append(f"grpc={host}:{servers.grpc_port} ({'tls' if tls else 'h2c'})")
    if servers.http_port is not None:
        parts.append(f"http={host}:{servers.http_port}")
    parts.append(f"keys={'required' if servers.core.keys.required else 'none'}")
    return " ".join(parts)
