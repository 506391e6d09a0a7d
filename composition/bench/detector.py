"""``bench featurizer --model face-detector``: a detector's latency, work and box agreement.

A detector's cost depends on the image (pyramid levels, candidates), so it runs on a fixed set
of scikit-image photos, round robin, and reports per-image latency, the multiply-accumulates it
actually did, that rate as a fraction of the CPU's peak, and how many fp32 boxes the measured
precision finds again (IoU >= 0.5), beside the fp32 run of the same session.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from composition.bench.featurizer import _percentiles, cpu_peak
from modules.accelerators import detection as det
from modules.accelerators.model_store import ModelStore

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from modules.accelerators.detectors import Detector

PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket")  # faces in the first two
MATCH_IOU = 0.5


def photos() -> dict[str, npt.NDArray[np.uint8]]:
    from modules.featurizer.evalset import photo

    return {name: photo(name) for name in PHOTOS}


def box_agreement(
    reference: list[det.Detection], other: list[det.Detection], threshold: float = MATCH_IOU
) -> tuple[int, int]:
    """(reference boxes found again at IoU >= threshold, boxes of ``other`` matching none)."""
    found = sum(1 for ref in reference if any(det.iou(ref.box, o.box) >= threshold for o in other))
    extra = sum(
        1 for o in other if not any(det.iou(ref.box, o.box) >= threshold for ref in reference)
    )
    return found, extra


def _timed(
    cascade: Detector,
    images: dict[str, npt.NDArray[np.uint8]],
    iterations: int,
    seconds: float,
) -> dict[str, Any]:
    samples: list[float] = []
    macs = 0
    names = list(images)
    deadline = time.perf_counter() + seconds
    while len(samples) < iterations and time.perf_counter() < deadline:
        rgb = images[names[len(samples) % len(names)]]
        start = time.perf_counter()
        cascade.detect(rgb)
        samples.append(time.perf_counter() - start)
        macs += cascade.last_macs
    total = sum(samples)
    return {
        "images": len(samples),
        **_percentiles(samples),
        "images_per_s": round(len(samples) / total, 2) if total else 0.0,
        "gmacs_per_image": round(macs / len(samples) / 1e9, 4) if samples else 0.0,
        "achieved_gmacs_per_s": round(macs / total / 1e9, 2) if total else 0.0,
    }


def run_detector_bench(
    store: ModelStore,
    model: str,
    precision: str,
    iterations: int,
    seconds: float,
    threads: int | None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    from modules.accelerators.cpu import physical_cores
    from modules.accelerators.detectors import open_detector

    say = progress or (lambda _msg: None)
    images = photos()
    threads = threads or physical_cores()
    peak = cpu_peak(threads)
    runs: dict[str, dict[str, Any]] = {}
    detections: dict[str, dict[str, list[det.Detection]]] = {}
    for prec in dict.fromkeys(("fp32", precision)):
        say(f"{model} {prec}: measuring on {len(images)} photos")
        cascade = open_detector(store, model, prec, threads=threads)
        # the detections of every photo, which also warms up every pyramid level size
        detections[prec] = {name: cascade.detect(rgb) for name, rgb in images.items()}
        runs[prec] = _timed(cascade, images, iterations, seconds)
        peak_key = "int8_gmacs" if prec == "int8" else "fp32_gmacs"
        runs[prec]["fraction_of_peak"] = round(
            runs[prec]["achieved_gmacs_per_s"] / peak[peak_key], 4
        )
        runs[prec]["engine"] = cascade.engine
        cascade.close()
    found = extra = total = 0
    for name in images:
        hit, more = box_agreement(detections["fp32"][name], detections[precision][name])
        found, extra, total = found + hit, extra + more, total + len(detections["fp32"][name])
    return {
        "model": model,
        "kind": "detector",
        "precision": precision,
        "threads": threads,
        "photos": {
            name: {
                "size": list(rgb.shape[:2]),
                "fp32_boxes": len(detections["fp32"][name]),
                f"{precision}_boxes": len(detections[precision][name]),
            }
            for name, rgb in images.items()
        },
        "runs": runs,
        "box_agreement": {
            "fp32_boxes": total,
            "found_again_iou_ge_0.5": found,
            "extra_boxes": extra,
            "match_rate": round(found / total, 4) if total else None,
        },
        "physical_peak": peak,
    }


def report_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"{report['model']} (detector) on cpu, {report['threads']} thread(s)"]
    for prec, run in report["runs"].items():
        lines.append(
            f"  {prec}: p50 {run['p50_ms']} ms, p90 {run['p90_ms']} ms per image, "
            f"{run['images_per_s']} images/s, {run['gmacs_per_image']} GMACs per image, "
            f"{run['achieved_gmacs_per_s']} GMAC/s = {run['fraction_of_peak']:.2%} of peak "
            f"[{run['engine']}]"
        )
    agree = report["box_agreement"]
    if report["precision"] != "fp32":
        lines.append(
            f"  {report['precision']} finds {agree['found_again_iou_ge_0.5']} of "
            f"{agree['fp32_boxes']} fp32 boxes again (IoU >= 0.5), {agree['extra_boxes']} extra"
        )
    return lines
