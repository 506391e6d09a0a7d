"""``edgefleet models quantize`` for an imported detector whose graph ends in decoded
detections: the classifiers' numerics (``quantize_imported``: GPTQ-rounded, bias-corrected
static QDQ int8, or the FPGA emulator's BFP rewrite of fp32 with the calibration means), judged by
how many of fp32's boxes the quantized network still gives on the held-out images
(``box_match``), each network run as ``serve`` runs it (``decoded.DecodedDetector``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.accelerators.model_store import ModelStore
from modules.featurizer.quantize_imported import (
    Progress,
    Split,
    keep_networks,
    median_ms,
    quantized_network,
    record,
    with_means,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def _pixels(files: list[Path], step: str, say: Progress) -> list[npt.NDArray[np.uint8]]:
    from modules.accelerators.preprocess import decode_rgb

    out = []
    for i, path in enumerate(files):
        out.append(decode_rgb(path))
        say(step, i + 1, len(files))
    return out


def quantize_detector(
    store: ModelStore,
    ref: str,
    split: Split,
    precision: str,
    threshold: float,
    iou: float,
    say: Progress,
) -> dict[str, Any]:
    """Quantize the detector ``ref`` on ``split.calibration``; report and record its box match
    rate with fp32 on ``split.held_out`` and both latencies (one image, resize to decode)."""
    import numpy as np
    import onnx

    from modules.accelerators.decoded import DecodedDetector
    from modules.accelerators.whole_image import squeezed_batch
    from modules.featurizer.box_match import match_report

    manifest = store.get(ref)
    settings = manifest.detector
    assert settings is not None  # checked by quantize_imported
    calib_rgb = _pixels(split.calibration, "reading calibration images", say)
    held_rgb = _pixels(split.held_out, "reading held-out images", say)
    calib = np.concatenate([squeezed_batch(rgb, manifest.preprocessing) for rgb in calib_rgb])
    fp32_path = store.resolve(manifest.featurizer["fp32"])
    say("measuring conv input means", 0, None)
    fp32, means = with_means(onnx.load(str(fp32_path)), manifest.featurizer_input.name, calib)

    def opened(network: Path | bytes, variant: str) -> DecodedDetector:
        return DecodedDetector(
            network,
            manifest.featurizer_input.name,
            settings,
            manifest.preprocessing,
            manifest.featurizer_macs,
            precision=variant,
        )

    with tempfile.TemporaryDirectory(prefix="edgefleet-quantize-") as tmp:
        work = Path(tmp)
        say(f"quantizing to {precision}", 0, None)
        int8_file, network = quantized_network(
            fp32, means, calib, precision, work, keep_tail_float=True
        )
        quantized = opened(network, precision)
        reference = opened(fp32_path, "fp32")
        say("comparing with fp32 on held-out images", 0, None)
        pairs = [(reference.detect(rgb), quantized.detect(rgb)) for rgb in held_rgb]
        result = match_report(pairs, iou)
        say("timing", 0, None)
        fp32_ms = median_ms(lambda: reference.detect(held_rgb[0]))
        quantized_ms = median_ms(lambda: quantized.detect(held_rgb[0]))
        engine = quantized.engine
        keep_networks(store, manifest, fp32, int8_file, precision, split, work)
    flagged = record(store, ref, manifest, precision, result["box_match_rate"], threshold)
    say("done", 1, 1)
    return {
        "model": f"{manifest.name}:{manifest.version}",
        "kind": "detector",
        "precision": precision,
        "calibration_images": len(split.calibration),
        "holdout_images": len(split.held_out),
        **result,
        "threshold": threshold,
        "flagged": flagged,
        "fp32_ms": round(fp32_ms, 3),
        "quantized_ms": round(quantized_ms, 3),
        "engine": engine,
    }
