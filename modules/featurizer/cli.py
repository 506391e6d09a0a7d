"""`edgefleet models ...` and `edgefleet bench featurizer` (heavy imports stay inside commands)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from edgefleet.cli_apps import fail, models_app

ENGINE_HELP = "CPU engine: auto, onnxruntime or openvino (default: $EDGEFLEET_CPU_ENGINE or auto)."
DEVICE_HELP = "FPGA emulator device name or socket path (fpga-emulator only)."
MODEL_DIR_HELP = "Model store directory (default: $EDGEFLEET_MODEL_DIR or the user data dir)."


@contextmanager
def clear_errors() -> Iterator[None]:
    """Known failures become one line on stderr and exit code 1."""
    from modules.accelerators.model_store import StoreError
    from modules.accelerators.preprocess import ImageError
    from modules.accelerators.session import AcceleratorError

    try:
        yield
    except (StoreError, AcceleratorError, ImageError, ValueError, OSError) as exc:
        fail(str(exc))
    except typer.Exit:
        raise
    except Exception as exc:  # never a traceback for the user
        fail(f"{type(exc).__name__}: {exc}")


def open_store(model_dir: Path | None) -> Any:
    from modules.accelerators.model_store import ModelStore

    return ModelStore(model_dir)


def _notice(session: Any) -> None:
    if session.notice:
        typer.echo(f"warning: {session.notice}", err=True)


@contextmanager
def step_status(enabled: bool) -> Iterator[Callable[[str], None]]:
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
        ..., help="efficientnet-lite0, resnet50, resnet152, vgg16, densenet121, face-detector"
    ),
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    precision: list[str] = typer.Option(
        ["fp32", "int8", "fp16"], "--precision", help="Precisions to build (repeatable)."
    ),
    calibration_images: int = typer.Option(64, help="Images for int8 calibration."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Build a featurizer + default head, or a detector, into the model store (ONNX; torch is
    used only here)."""
    from modules.featurizer.build import BuildError, build_model

    store = open_store(model_dir)
    with clear_errors(), step_status(not as_json) as say:
        try:
            manifest = build_model(name, store, precision, calibration_images, progress=say)
        except BuildError as exc:
            fail(str(exc))
    if as_json:
        typer.echo(manifest.model_dump_json(indent=2))
        return
    label = " [SYNTHETIC WEIGHTS: for cost and latency only]" if manifest.synthetic_weights else ""
    typer.echo(f"built {manifest.name} v{manifest.version}{label}")
    typer.echo(f"  weights: {manifest.weights_source}")
    if manifest.kind == "detector":
        typer.echo(
            f"  detector: {', '.join(manifest.stages)}, {manifest.featurizer_macs / 1e6:.1f} MMACs "
            "per window of each network (the P-Net's cost grows with the image)"
        )
    else:
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
    from modules.accelerators.bfp_at_load import formats_at_load
    from modules.accelerators.select import runnable_on
    from modules.featurizer.build import SPECS
    from modules.featurizer.build_detector import DETECTORS

    store = open_store(model_dir)
    with clear_errors():
        manifests = []
        currents = {}
        for current in store.manifests():
            currents[current.name] = current.version
            kept = store.versions(current.name)
            manifests += [store.get(f"{current.name}:{v}") for v in kept] if kept else [current]
    rows = [
        {
            "name": m.name,
            "version": m.version,
            "current": currents.get(m.name) == m.version,
            "origin": m.origin,
            "kind": m.kind,
            "architecture": m.architecture,
            "synthetic_weights": m.synthetic_weights,
            "feature_dim": m.feature_dim,
            "featurizer_gmacs": round(m.featurizer_macs / 1e9, 3),
            "precisions": m.precisions,
            "rewritten_at_load": formats_at_load(m),
            "sizes": {p: a.size for p, a in sorted(m.featurizer.items())},
            "agreement": m.agreement,
            "flagged": m.flagged,
            "accelerators": runnable_on(m),
            "heads": sorted(m.heads),
        }
        for m in manifests
    ]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "model_dir": str(store.root),
                    "models": rows,
                    "buildable": sorted([*SPECS, *DETECTORS]),
                },
                indent=2,
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models in {store.root}")
    for col in ("name", "version", "weights", "GMACs", "precisions (size, agreement)", "runs on"):
        table.add_column(col)
    for r in rows:
        sizes = [
            f"{p} {_size(r['sizes'][p])}"
            + (f" {r['agreement'][p]:.1%}" if p in r["agreement"] else "")
            + (" FLAGGED" if p in r["flagged"] else "")
            for p in r["precisions"]
        ]
        sizes += [
            f"{p} {a:.1%}" + (" FLAGGED" if p in r["flagged"] else "")
            for p, a in r["agreement"].items()
            if p not in r["sizes"]
        ]
        if r["rewritten_at_load"]:
            sizes.append(f"{', '.join(r['rewritten_at_load'])} from fp32 at load")
        weights = "imported" if r["origin"] == "imported" else "real"
        table.add_row(
            r["name"],
            r["version"] + (" *" if r["current"] else ""),
            "SYNTHETIC" if r["synthetic_weights"] else weights,
            str(r["featurizer_gmacs"]),
            "; ".join(sizes),
            ",".join(r["accelerators"]),
        )
    Console(width=160).print(table)
    missing = sorted({*SPECS, *DETECTORS} - {r["name"] for r in rows})
    if missing:
        typer.echo(f"not built yet: {', '.join(missing)} (edgefleet models build NAME)")


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


@models_app.command("verify")
def verify(
    name: str,
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Check every artifact of a model against the sha256 in its manifest."""
    store = open_store(model_dir)
    with clear_errors():
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
    from modules.accelerators.classify import ImageClassifier
    from modules.accelerators.select import open_accelerator

    store = open_store(model_dir)
    with clear_errors():
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
    holdout: float = typer.Option(
        0.2, "--holdout", help="Fraction of each class kept out of training to measure accuracy."
    ),
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Train a classifier head on featurizer outputs (transfer learning); store it as ONNX."""
    from rich.progress import Progress

    from modules.accelerators.select import open_accelerator
    from modules.featurizer.train_head import train_head

    store = open_store(model_dir)
    with clear_errors():
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
                holdout=holdout,
            )
    payload = {
        "featurizer": featurizer,
        "head": result.head,
        "labels": result.labels,
        "images": result.images,
        "train_accuracy": round(result.train_accuracy, 4),
        "heldout_accuracy": (
            None if result.heldout_accuracy is None else round(result.heldout_accuracy, 4)
        ),
        "heldout_images": result.heldout_images,
        "epochs": result.epochs,
    }
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
    else:
        typer.echo(
            f"trained head {result.head!r} on {result.images} images, {len(result.labels)} classes "
            f"({', '.join(result.labels)}); train accuracy {result.train_accuracy:.1%}"
            + (
                f", held-out accuracy {result.heldout_accuracy:.1%} "
                f"on {result.heldout_images} images"
                if result.heldout_accuracy is not None
                else ""
            )
        )
        typer.echo(
            f"use it: edgefleet models predict --model {featurizer} --head {result.head} ..."
        )
