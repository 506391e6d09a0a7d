"""``bench featurizer --model face-detector``: a detector's latency, work and box agreement.

A detector's cost depends on the image (pyramid levels, candidates), so it runs on a fixed set
of scikit-image photos, round robin, and reports per-image latency, the multiply-accumulates it
actually did, that rate as a fraction of the CPU's peak, and how many fp32 boxes each measured
precision finds again (IoU >= 0.5), beside the fp32 run of the same session. Several precisions
(``int8,bfp8``) are measured in one run, interleaved photo by photo; a BFP format runs the
emulator's numerics on the CPU in float32, so its fraction is of the fp32 peak.
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
    detectors: dict[str, Detector],
    images: dict[str, npt.NDArray[np.uint8]],
    iterations: int,
    seconds: float,
) -> dict[str, dict[str, Any]]:
    """Each photo through every precision in turn (round robin over photos), so that a change
    of the machine's load reaches all precisions alike; ``seconds`` caps each precision."""
    samples: dict[str, list[float]] = {prec: [] for prec in detectors}
    macs = dict.fromkeys(detectors, 0)
    names = list(images)
    deadline = time.perf_counter() + seconds * len(detectors)
    rounds = 0
    while rounds < iterations and time.perf_counter() < deadline:
        rgb = images[names[rounds % len(names)]]
        for prec, detector in detectors.items():
            start = time.perf_counter()
            detector.detect(rgb)
            samples[prec].append(time.perf_counter() - start)
            macs[prec] += detector.last_macs
        rounds += 1
    out = {}
    for prec, taken in samples.items():
        total = sum(taken)
        out[prec] = {
            "images": len(taken),
            **_percentiles(taken),
            "images_per_s": round(len(taken) / total, 2) if total else 0.0,
            "gmacs_per_image": round(macs[prec] / len(taken) / 1e9, 4) if taken else 0.0,
            "achieved_gmacs_per_s": round(macs[prec] / total / 1e9, 2) if total else 0.0,
        }
    return out


def precisions_of(precision: str) -> list[str]:
    """``"int8,bfp8"`` -> ``["fp32", "int8", "bfp8"]``: fp32 first, each once."""
    asked = [p.strip() for p in precision.split(",") if p.strip()]
    return list(dict.fromkeys(["fp32", *asked]))


def _agreement(
    reference: dict[str, list[det.Detection]], other: dict[str, list[det.Detection]]
) -> dict[str, Any]:
    found = extra = total = 0
    for name, boxes in reference.items():
        hit, more = box_agreement(boxes, other[name])
        found, extra, total = found + hit, extra + more, total + len(boxes)
    return {
        "fp32_boxes": total,
        "found_again_iou_ge_0.5": found,
        "extra_boxes": extra,
        "match_rate": round(found / total, 4) if total else None,
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
    """``precision``: one precision or several, comma-separated (each measured beside fp32)."""
    from modules.accelerators.cpu import physical_cores
    from modules.accelerators.detectors import open_detector

    say = progress or (lambda _msg: None)
    images = photos()
    threads = threads or physical_cores()
    peak = cpu_peak(threads)
    precisions = precisions_of(precision)
    detectors: dict[str, Detector] = {}
    detections: dict[str, dict[str, list[det.Detection]]] = {}
    for prec in precisions:
        say(f"{model} {prec}: opening, and detecting on {len(images)} photos")
        detectors[prec] = open_detector(store, model, prec, threads=threads)
        # the detections of every photo, which also warms up every pyramid level size
        detections[prec] = {name: detectors[prec].detect(rgb) for name, rgb in images.items()}
    say(f"timing {', '.join(precisions)} photo by photo")
    runs = _timed(detectors, images, iterations, seconds)
    for prec, detector in detectors.items():
        peak_key = "int8_gmacs" if prec == "int8" else "fp32_gmacs"
        runs[prec]["fraction_of_peak"] = round(
            runs[prec]["achieved_gmacs_per_s"] / peak[peak_key], 4
        )
        runs[prec]["engine"] = detector.engine
        if prec != "fp32":
            runs[prec]["box_agreement"] = _agreement(detections["fp32"], detections[prec])
        detector.close()
    compared = precisions[1] if len(precisions) > 1 else "fp32"
    return {
        "model": model,
        "kind": "detector",
        "precision": ",".join(precisions[1:]) or "fp32",
        "threads": threads,
        "photos": {
            name: {"size": list(rgb.shape[:2])}
            | {f"{prec}_boxes": len(detections[prec][name]) for prec in precisions}
            for name, rgb in images.items()
        },
        "runs": runs,
        "box_agreement": _agreement(detections["fp32"], detections[compared]),
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
    for prec, run in report["runs"].items():
        if "box_agreement" in run:
            agree = run["box_agreement"]
            lines.append(
                f"  {prec} finds {agree['found_again_iou_ge_0.5']} of {agree['fp32_boxes']} fp32 "
                f"boxes again (IoU >= 0.5), {agree['extra_boxes']} extra"
            )
    return lines
