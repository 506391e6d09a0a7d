"""``bench featurizer --model face-detector``: a detector's latency, work and box agreement.

A detector's cost depends on the image (pyramid levels, candidates), so it runs on a fixed set
of scikit-image photos, round robin, and reports per-image latency, the multiply-accumulates it
actually did, that rate as a fraction of the CPU's peak, and how many fp32 boxes each measured
precision finds again (IoU >= 0.5), beside the fp32 run of the same session. Several precisions
(``int8,bfp8``) are measured in one run, interleaved photo by photo; on the cpu a BFP format
runs the emulator's numerics in float32, so its fraction is of the fp32 peak. With
``accelerator="fpga-emulator"`` the BFP precision runs on the emulated card (one per run: the
card holds one model) beside the fp32 CPU baseline, and its run adds the cycle model's device
time per image and the card's fraction of its own peak (MACs per emulated second).
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
    device: dict[str, list[float]] = {prec: [] for prec in detectors}
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
            if detector.last_device_ms is not None:
                device[prec].append(detector.last_device_ms / 1000.0)
        rounds += 1
    out: dict[str, dict[str, Any]] = {}
    for prec, taken in samples.items():
        total = sum(taken)
        out[prec] = {
            "images": len(taken),
            **_percentiles(taken),
            "images_per_s": round(len(taken) / total, 2) if total else 0.0,
            "gmacs_per_image": round(macs[prec] / len(taken) / 1e9, 4) if taken else 0.0,
            "achieved_gmacs_per_s": round(macs[prec] / total / 1e9, 2) if total else 0.0,
        }
        if device[prec]:
            spent = sum(device[prec])
            out[prec]["emulated_device_ms"] = _percentiles(device[prec])
            out[prec]["emulated_gmacs_per_s"] = round(macs[prec] / spent / 1e9, 2)
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


def card_precision(precisions: list[str]) -> str:
    """The one BFP precision an fpga-emulator run measures beside fp32 (ValueError else)."""
    from modules.accelerators.bfp_at_load import is_bfp

    asked = precisions[1:]
    if len(asked) != 1 or not is_bfp(asked[0]):
        raise ValueError(
            "on fpga-emulator the bench measures one BFP precision (bfp8, msfp9 or msfp8) "
            f"beside the fp32 CPU baseline, not {','.join(asked) or 'fp32'}"
        )
    return asked[0]


def card_peak_gmacs(card: dict[str, Any]) -> float:
    """The emulated card's peak from its config (``status()["card"]``)."""
    per_cycle = card["tiles"] * card["lanes"] * card["native_vector"]
    return float(per_cycle * card["clock_mhz"] * 1e6 / 1e9)


def run_detector_bench(
    store: ModelStore,
    model: str,
    precision: str,
    iterations: int,
    seconds: float,
    threads: int | None,
    progress: Callable[[str], None] | None = None,
    accelerator: str = "cpu",
    device: str | None = None,
) -> dict[str, Any]:
    """``precision``: one precision or several, comma-separated (each measured beside fp32);
    on ``fpga-emulator`` one BFP precision, run on the card at ``device``."""
    from modules.accelerators.cpu import physical_cores
    from modules.accelerators.detectors import open_detector
    from modules.accelerators.fpga.detector import CardDetector

    say = progress or (lambda _msg: None)
    threads = threads or physical_cores()
    peak = cpu_peak(threads)
    precisions = precisions_of(precision)
    on_card = card_precision(precisions) if accelerator == "fpga-emulator" else None
    images = photos()
    detectors: dict[str, Detector] = {}
    detections: dict[str, dict[str, list[det.Detection]]] = {}
    card: dict[str, Any] | None = None
    for prec in precisions:
        where = "fpga-emulator" if prec == on_card else "cpu"
        say(f"{model} {prec} on {where}: opening, and detecting on {len(images)} photos")
        detectors[prec] = open_detector(
            store, model, prec, threads=threads, accelerator=where, device=device
        )
        found = detectors[prec]
        if isinstance(found, CardDetector):
            card = dict(found.link.dev.status()["card"])
        # the detections of every photo, which also warms up every pyramid level size
        detections[prec] = {name: detectors[prec].detect(rgb) for name, rgb in images.items()}
    say(f"timing {', '.join(precisions)} photo by photo")
    runs = _timed(detectors, images, iterations, seconds)
    for prec, detector in detectors.items():
        run = runs[prec]
        run["accelerator"] = "fpga-emulator" if prec == on_card else "cpu"
        if prec == on_card and card is not None and "emulated_gmacs_per_s" in run:
            # the card's share of its own peak, at the emulated device time
            run["card_peak_gmacs"] = card_peak_gmacs(card)
            run["fraction_of_peak"] = round(run["emulated_gmacs_per_s"] / run["card_peak_gmacs"], 5)
            run["host_p50_vs_fp32_cpu"] = round(run["p50_ms"] / runs["fp32"]["p50_ms"], 3)
            run["device_p50_vs_fp32_cpu"] = round(
                run["emulated_device_ms"]["p50_ms"] / runs["fp32"]["p50_ms"], 4
            )
        else:
            peak_key = "int8_gmacs" if prec == "int8" else "fp32_gmacs"
            run["fraction_of_peak"] = round(run["achieved_gmacs_per_s"] / peak[peak_key], 4)
        run["engine"] = detector.engine
        if prec != "fp32":
            runs[prec]["box_agreement"] = _agreement(detections["fp32"], detections[prec])
        detector.close()
    compared = precisions[1] if len(precisions) > 1 else "fp32"
    return {
        "model": model,
        "kind": "detector",
        "accelerator": accelerator,
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
    lines = [
        f"{report['model']} (detector) on {report.get('accelerator', 'cpu')}, fp32 baseline on "
        f"cpu, {report['threads']} thread(s)"
    ]
    for prec, run in report["runs"].items():
        where = run.get("accelerator", "cpu")
        if "emulated_device_ms" in run:
            dev = run["emulated_device_ms"]
            lines.append(
                f"  {prec} on {where}: host p50 {run['p50_ms']} ms, p90 {run['p90_ms']} ms per "
                f"image; emulated device p50 {dev['p50_ms']} ms, p90 {dev['p90_ms']} ms; "
                f"{run['gmacs_per_image']} GMACs per image, {run['emulated_gmacs_per_s']} GMAC/s "
                f"= {run['fraction_of_peak']:.2%} of the card's {run['card_peak_gmacs']:g} GMAC/s "
                f"[{run['engine']}]"
            )
            continue
        lines.append(
            f"  {prec} on {where}: p50 {run['p50_ms']} ms, p90 {run['p90_ms']} ms per image, "
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
