"""`edgefleet models ...` and `edgefleet bench featurizer` (heavy imports stay inside commands)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from edgefleet.cli_apps import bench_app, models_app

ENGINE_HELP = "CPU engine: auto, onnxruntime or openvino (default: $EDGEFLEET_CPU_ENGINE or auto)."
DEVICE_HELP = "FPGA emulator device name or socket path (fpga-emulator only)."
MODEL_DIR_HELP = "Model store directory (default: $EDGEFLEET_MODEL_DIR or the user data dir)."


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Known failures become one line on stderr and exit code 1."""
    from edge_agent.accelerators.preprocess import ImageError
    from edge_agent.accelerators.session import AcceleratorError
    from edge_agent.accelerators.store import StoreError

    try:
        yield
    except (StoreError, AcceleratorError, ImageError, ValueError, OSError) as exc:
        _fail(str(exc))
    except typer.Exit:
        raise
    except Exception as exc:  # never a traceback for the user
        _fail(f"{type(exc).__name__}: {exc}")


def _store(model_dir: Path | None) -> Any:
    from edge_agent.accelerators.store import ModelStore

    return ModelStore(model_dir)


def _notice(session: Any) -> None:
    if session.notice:
        typer.echo(f"warning: {session.notice}", err=True)


@contextmanager
def _status(enabled: bool) -> Iterator[Callable[[str], None]]:
    """A rich spinner with the current step (on stderr, off for --json)."""
    from rich.console import Console

    if not enabled:
        yield lambda _msg: None
        return
    console = Console(stderr=True)
    with console.status("working") as status:
        yield lambda msg: status.update(msg)


@models_app.command("build")
def build(
    name: str = typer.Argument(
        ..., help="efficientnet-lite0, resnet50, resnet152, vgg16, densenet121"
    ),
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    precision: list[str] = typer.Option(
        ["fp32", "int8", "fp16"], "--precision", help="Precisions to build (repeatable)."
    ),
    calibration_images: int = typer.Option(64, help="Images for int8 calibration."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Build a featurizer + default head into the model store (ONNX; torch is used only here)."""
    from modules.featurizer.build import BuildError, build_model

    store = _store(model_dir)
    with _clear_errors(), _status(not as_json) as say:
        try:
            manifest = build_model(name, store, precision, calibration_images, progress=say)
        except BuildError as exc:
            _fail(str(exc))
    if as_json:
        typer.echo(manifest.model_dump_json(indent=2))
        return
    label = " [SYNTHETIC WEIGHTS: for cost and latency only]" if manifest.synthetic_weights else ""
    typer.echo(f"built {manifest.name} v{manifest.version}{label}")
    typer.echo(f"  weights: {manifest.weights_source}")
    typer.echo(
        f"  featurizer: {manifest.feature_dim}-d, {manifest.featurizer_macs / 1e9:.3f} GMACs"
    )
    typer.echo(f"  precisions: {', '.join(manifest.precisions)}")
    typer.echo(f"  store: {store.root}")


@models_app.command("list")
def list_models(
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Models in the store (and the ones that can be built)."""
    from modules.featurizer.build import SPECS

    store = _store(model_dir)
    with _clear_errors():
        manifests = store.manifests()
    rows = [
        {
            "name": m.name,
            "version": m.version,
            "architecture": m.architecture,
            "synthetic_weights": m.synthetic_weights,
            "feature_dim": m.feature_dim,
            "featurizer_gmacs": round(m.featurizer_macs / 1e9, 3),
            "precisions": m.precisions,
            "heads": sorted(m.heads),
        }
        for m in manifests
    ]
    if as_json:
        typer.echo(
            json.dumps(
                {"model_dir": str(store.root), "models": rows, "buildable": sorted(SPECS)}, indent=2
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models in {store.root}")
    for col in ("name", "weights", "dim", "GMACs", "precisions", "heads"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            "SYNTHETIC" if r["synthetic_weights"] else "real",
            str(r["feature_dim"]),
            str(r["featurizer_gmacs"]),
            ",".join(r["precisions"]),
            ",".join(r["heads"]),
        )
    Console().print(table)
    missing = sorted(set(SPECS) - {r["name"] for r in rows})
    if missing:
        typer.echo(f"not built yet: {', '.join(missing)} (edgefleet models build NAME)")


@models_app.command("verify")
def verify(
    name: str,
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Check every artifact of a model against the sha256 in its manifest."""
    store = _store(model_dir)
    with _clear_errors():
        problems = store.verify(name)
    if as_json:
        typer.echo(json.dumps({"model": name, "ok": not problems, "problems": problems}))
    else:
        typer.echo(f"{name}: ok" if not problems else "\n".join(problems))
    if problems:
        raise typer.Exit(1)


@models_app.command("predict")
def predict(
    images: list[Path] = typer.Argument(..., help="Image files (JPEG/PNG)."),
    model: str = typer.Option("efficientnet-lite0", "--model"),
    accelerator: str = typer.Option(
        "auto", "--accelerator", help="auto (gpu when present, else cpu), cpu, gpu, fpga-emulator"
    ),
    precision: str = typer.Option("fp32", "--precision", help="fp32, int8, fp16 (gpu), bfp8..."),
    head: str = typer.Option("default", "--head", help="Classifier head (see models list)."),
    top: int = typer.Option(5, "--top"),
    engine: str | None = typer.Option(None, "--engine", help=ENGINE_HELP),
    device: str | None = typer.Option(None, "--device", help=DEVICE_HELP),
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Classify images: top-k [{class_id, label, score}] per image."""
    from edge_agent.accelerators.classify import ImageClassifier
    from edge_agent.accelerators.select import open_accelerator

    store = _store(model_dir)
    with _clear_errors():
        session = open_accelerator(
            accelerator, model, precision, store=store, warmup=0, engine=engine, device=device
        )
        _notice(session)
        classifier = ImageClassifier(session, store, head)
        results = classifier.classify(list(images), top)
    manifest = classifier.manifest
    if as_json:
        payload = [
            {"image": str(path), "top": result}
            for path, result in zip(images, results, strict=True)
        ]
        typer.echo(json.dumps(payload, indent=2))
        return
    if manifest.synthetic_weights:
        typer.echo("note: synthetic weights: these classes are not meaningful", err=True)
    for path, result in zip(images, results, strict=True):
        typer.echo(str(path))
        for entry in result:
            typer.echo(f"  {entry['score']:.4f}  {entry['class_id']:>4}  {entry['label']}")


@models_app.command("train-head")
def train_head_cmd(
    featurizer: str = typer.Option(..., "--featurizer", help="Featurizer model name."),
    images: Path = typer.Option(..., "--images", help="DIR/<label>/*.jpg"),
    name: str = typer.Option("custom", "--name", help="Name of the new head."),
    accelerator: str = typer.Option("cpu", "--accelerator"),
    precision: str = typer.Option("fp32", "--precision"),
    epochs: int = typer.Option(300, "--epochs"),
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Train a classifier head on featurizer outputs (transfer learning); store it as ONNX."""
    from rich.progress import Progress

    from edge_agent.accelerators.select import open_accelerator
    from modules.featurizer.train_head import train_head

    store = _store(model_dir)
    with _clear_errors():
        session = open_accelerator(accelerator, featurizer, precision, store=store, warmup=0)
        _notice(session)
        with Progress(disable=as_json, transient=True) as bar:
            task = bar.add_task("featurizing", total=None)
            result = train_head(
                session,
                store,
                images,
                name,
                epochs,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    payload = {
        "featurizer": featurizer,
        "head": result.head,
        "labels": result.labels,
        "images": result.images,
        "train_accuracy": round(result.train_accuracy, 4),
        "epochs": result.epochs,
    }
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
    else:
        typer.echo(
            f"trained head {result.head!r} on {result.images} images, {len(result.labels)} classes "
            f"({', '.join(result.labels)}); train accuracy {result.train_accuracy:.1%}"
        )
        typer.echo(
            f"use it: edgefleet models predict --model {featurizer} --head {result.head} ..."
        )


@bench_app.command("featurizer")
def bench_featurizer(
    model: str = typer.Option("efficientnet-lite0", "--model"),
    accelerator: str = typer.Option("cpu", "--accelerator"),
    precision: str = typer.Option("int8", "--precision"),
    iterations: int = typer.Option(200, "--iterations", help="Batch-1 runs (at most)."),
    seconds: float = typer.Option(15.0, "--seconds", help="Time cap per measurement."),
    threads: int | None = typer.Option(None, "--threads", help="Default: physical cores."),
    engine: str | None = typer.Option(None, "--engine", help=ENGINE_HELP),
    device: str | None = typer.Option(None, "--device", help=DEVICE_HELP),
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    eval_set: str = typer.Option(
        "objects", "--eval-set", help="Headline accuracy set: objects or hard (both reported)."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Latency/throughput of a featurizer vs the onnxruntime fp32 CPU baseline, and accuracy."""
    from modules.featurizer.bench import run_bench

    store = _store(model_dir)
    with _clear_errors(), _status(not as_json) as say:
        report = run_bench(
            store,
            model,
            accelerator,
            precision,
            iterations,
            seconds,
            threads,
            engine=engine,
            device=device,
            eval_set=eval_set,
            progress=say,
        )
    if report["notice"]:
        typer.echo(f"warning: {report['notice']}", err=True)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    b, base = report["batch1"], report["baseline_cpu_fp32"]
    synthetic = " (SYNTHETIC weights)" if report["synthetic_weights"] else ""
    lines = [
        f"{model}{synthetic} on {report['ran_on']} {precision} [{report['engine']}]",
        f"  batch 1: p50 {b['p50_ms']} ms, p90 {b['p90_ms']} ms, p99 {b['p99_ms']} ms",
        f"  batch 8: {report['throughput_ips_batch8']} images/s",
        f"  baseline onnxruntime fp32 CPU: p50 {base['p50_ms']} ms, "
        f"{base['throughput_ips_batch8']} images/s",
        f"  speed-up: {report['speedup_p50']}x latency, {report['speedup_throughput']}x throughput",
        f"  {report['achieved_gmacs_per_s']} GMAC/s = {report['fraction_of_peak']} of the "
        f"{report['physical_peak']['used_gmacs']} GMAC/s peak",
    ]
    for name, acc in report["accuracy"].items():
        clear = acc.get("top1_agreement_where_fp32_margin_ge_0.05")
        lines.append(
            f"  top-1 agreement with fp32 on the {name!r} set: "
            f"{acc['top1_agreement_with_fp32']:.2%} of {acc['inputs']} inputs "
            f"({acc['disagreements']} differ; {clear if clear is None else f'{clear:.2%}'} where "
            f"fp32's top-2 margin >= 0.05; fp32 vs itself under half-LSB noise: "
            f"{acc['fp32_agreement_under_half_lsb_input_noise']:.2%})"
        )
    if "emulated_device_ms" in report:
        lines.append(f"  emulated device latency: p50 {report['emulated_device_ms']['p50_ms']} ms")
    typer.echo("\n".join(lines))
    sys.stdout.flush()
