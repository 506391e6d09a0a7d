"""`edgefleet models import | remove | quantize`: bring-your-own ONNX image models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from edgefleet.cli_apps import models_app
from modules.featurizer.cli import MODEL_DIR_HELP, clear_errors, open_store


@models_app.command("import")
def import_cmd(
    file: Path = typer.Argument(..., help="The ONNX model file."),
    name: str = typer.Option(..., "--name", help="Store name (lowercase, digits, . _ -)."),
    version: str | None = typer.Option(
        None, "--version", help="Version (default: the next number); required for a new one."
    ),
    labels: Path | None = typer.Option(
        None, "--labels", help="Class names, one per line (or a JSON list)."
    ),
    input_size: str | None = typer.Option(
        None, "--input-size", help="HxW, e.g. 224x224 (needed when the graph's size is dynamic)."
    ),
    mean: str | None = typer.Option(
        None, "--mean", help="Per-channel mean in 0..1 pixel units (default: ImageNet's)."
    ),
    std: str | None = typer.Option(None, "--std", help="Per-channel std (default: ImageNet's)."),
    layout: str | None = typer.Option(None, "--layout", help="NCHW or NHWC (default: guessed)."),
    kind: str | None = typer.Option(
        None,
        "--kind",
        help="classifier, or detector (a graph that ends in boxes, scores and classes).",
    ),
    box_format: str = typer.Option(
        "xyxy", "--box-format", help="A detector's boxes: xyxy, yxyx, xywh or cxcywh."
    ),
    box_units: str = typer.Option(
        "pixels",
        "--box-units",
        help="A detector's box coordinates: pixels of the model input, or normalized (0..1).",
    ),
    score_threshold: float = typer.Option(
        0.5, "--score-threshold", min=0.0, max=1.0, help="A detector's lowest score served."
    ),
    max_bytes: int = typer.Option(
        512 * 1024 * 1024, "--max-bytes", min=1, help="Largest model file accepted."
    ),
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Check an ONNX image model and add it to the model store (versions are kept)."""
    from modules.accelerators.decoded_outputs import BOX_FORMATS, BOX_UNITS
    from modules.accelerators.imported import (
        ImportOptions,
        ImportRejected,
        parse_floats,
        parse_labels,
        parse_size,
    )
    from modules.featurizer.import_model import import_model

    store = open_store(model_dir)
    with clear_errors():
        if layout is not None and layout.upper() not in ("NCHW", "NHWC"):
            raise ImportRejected(f"--layout {layout!r}: expected NCHW or NHWC")
        if kind is not None and kind not in ("classifier", "detector"):
            raise ImportRejected(f"--kind {kind!r}: expected classifier or detector")
        if box_format not in BOX_FORMATS:
            raise ImportRejected(
                f"--box-format {box_format!r}: expected one of {', '.join(BOX_FORMATS)}"
            )
        if box_units not in BOX_UNITS:
            raise ImportRejected(f"--box-units {box_units!r}: expected pixels or normalized")
        options = ImportOptions(
            input_size=parse_size(input_size) if input_size else None,
            mean=parse_floats(mean, "--mean") if mean else None,
            std=parse_floats(std, "--std") if std else None,
            layout=layout.upper() if layout else None,  # type: ignore[arg-type]
            kind=kind,  # type: ignore[arg-type]
            labels=parse_labels(labels.read_text(encoding="utf-8")) if labels else None,
            max_bytes=max_bytes,
            box_format=box_format,
            box_units=box_units,
            score_threshold=score_threshold,
        )
        manifest, found = import_model(store, file, name, options, version)
    summary = {"name": manifest.name, "version": manifest.version, **found.summary()}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    info = summary["input"]
    typer.echo(f"imported {manifest.name}:{manifest.version} ({manifest.kind}) into {store.root}")
    typer.echo(
        f"  input: {info['name']} {info['layout']} {info['channels']}x"
        f"{info['size'][0]}x{info['size'][1]}, mean {summary['mean']}, std {summary['std']}"
    )
    for out in summary["outputs"]:
        typer.echo(f"  output: {out['name']} {out['shape']}")
    ops = ", ".join(f"{k} {v}" for k, v in summary["op_counts"].items())
    typer.echo(f"  opset {summary['opset']}; ops: {ops}")
    typer.echo(f"  parameters: {summary['parameters']:,}; {summary['gmacs']} GMACs")
    if manifest.kind == "classifier":
        typer.echo(f"  classes: {summary['classes']} (labels: {summary['labels']})")
    elif manifest.detector is not None:
        d = manifest.detector
        classes = f", classes {d.classes_output}" if d.classes_output else ""
        typer.echo(
            f"  detections: boxes {d.boxes_output} ({d.box_format}, {d.box_units}), "
            f"scores {d.scores_output}{classes}; served at score >= {d.thresholds[0]}"
        )


@models_app.command("remove")
def remove_cmd(
    ref: str = typer.Argument(..., help="NAME (every version) or NAME:VERSION."),
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Remove a model (or one version) and the artifacts nothing else uses."""
    store = open_store(model_dir)
    with clear_errors():
        gone = store.remove(ref)
    if as_json:
        typer.echo(json.dumps({"removed": ref, "versions": gone}))
    else:
        typer.echo(f"removed {ref} (versions: {', '.join(gone)})")


@models_app.command("quantize")
def quantize_cmd(
    ref: str = typer.Argument(..., help="NAME or NAME:VERSION of an imported model."),
    calibration: Path = typer.Option(..., "--calibration", help="Directory of images."),
    precision: str = typer.Option(
        "int8", "--precision", help="int8 or a BFP format of the FPGA emulator (bfp8, msfp9)."
    ),
    holdout: float = typer.Option(
        0.2, "--holdout", min=0.05, max=0.9, help="Share of images held out for agreement."
    ),
    threshold: float = typer.Option(
        0.98,
        "--threshold",
        min=0.0,
        max=1.0,
        help="Agreement (a detector: box match rate) below this flags the precision.",
    ),
    iou: float | None = typer.Option(
        None,
        "--iou",
        min=0.05,
        max=1.0,
        help="Detectors: the IoU at which a box matches fp32's (default 0.5).",
    ),
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Quantize an imported model on calibration images; report agreement (a detector: box match
    rate with fp32) and latency."""
    from rich.progress import Progress

    from modules.featurizer.quantize_imported import quantize_imported

    store = open_store(model_dir)
    with clear_errors(), Progress(disable=as_json, transient=True) as bar:
        task = bar.add_task("preparing", total=None)

        def progress(step: str, done: int, total: int | None) -> None:
            bar.update(task, description=step, completed=done, total=total)

        report = quantize_imported(
            store, ref, calibration, precision, holdout, threshold, progress=progress, iou=iou
        )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    if report.get("kind") == "detector":
        _detector_report(report, precision, threshold)
        return
    typer.echo(
        f"{report['model']} {precision}: top-1 agreement with fp32 "
        f"{report['top1_agreement_with_fp32']:.2%} on {report['holdout_images']} held-out images "
        f"(calibrated on {report['calibration_images']})"
    )
    typer.echo(
        f"  latency per image: fp32 {report['fp32_ms']:.2f} ms, {precision} "
        f"{report['quantized_ms']:.2f} ms ({report['engine']})"
    )
    if report["flagged"]:
        typer.echo(
            f"warning: agreement is below {threshold:.0%}: {precision} is stored but flagged "
            "(serve warns when asked for it)",
            err=True,
        )


def _detector_report(report: dict[str, Any], precision: str, threshold: float) -> None:
    typer.echo(
        f"{report['model']} {precision}: box match rate with fp32 {report['box_match_rate']:.2%} "
        f"(IoU >= {report['match_iou']}, same class) on {report['holdout_images']} held-out "
        f"images (calibrated on {report['calibration_images']})"
    )
    typer.echo(
        f"  fp32 boxes {report['fp32_detections']}, {precision} boxes "
        f"{report['quantized_detections']}, matched {report['matched']} (recall "
        f"{report['recall_vs_fp32']:.2%}, precision {report['precision_vs_fp32']:.2%})"
    )
    typer.echo(
        f"  latency per image: fp32 {report['fp32_ms']:.2f} ms, {precision} "
        f"{report['quantized_ms']:.2f} ms ({report['engine']})"
    )
    if report["flagged"]:
        typer.echo(
            f"warning: box match rate is below {threshold:.0%}: {precision} is stored but "
            "flagged (serve warns when asked for it)",
            err=True,
        )
