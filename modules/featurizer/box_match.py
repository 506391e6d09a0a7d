"""How closely a quantized detector's detections follow its fp32 reference on the same images.

Per image, the quantized detections (best score first) are matched greedily: each takes the
still-unmatched fp32 detection of the same class with the highest IoU, if that IoU is at least
``iou``. Over all images, with ``F`` fp32 detections, ``Q`` quantized ones and ``M`` matches:
recall ``M / F`` (fp32 boxes the quantized model still finds), precision ``M / Q`` (quantized
boxes that fp32 also has) and the match rate ``2M / (F + Q)`` (their harmonic mean, F1), which
counts missed and extra boxes alike. No detections on either side is a perfect match (1.0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modules.accelerators.detection import Detection
from modules.accelerators.detection import iou as box_iou

MATCH_IOU = 0.5


def matched(reference: Sequence[Detection], candidate: Sequence[Detection], iou: float) -> int:
    """Greedy one-to-one matches of ``candidate`` to ``reference`` (same class, IoU >= iou)."""
    free = list(reference)
    count = 0
    for det in sorted(candidate, key=lambda d: -d.score):
        scored = [
            (box_iou(det.box, ref.box), i)
            for i, ref in enumerate(free)
            if ref.class_id == det.class_id
        ]
        best = max(scored, default=(0.0, -1))
        if best[1] >= 0 and best[0] >= iou:
            free.pop(best[1])
            count += 1
    return count


def match_report(
    pairs: Sequence[tuple[Sequence[Detection], Sequence[Detection]]], iou: float = MATCH_IOU
) -> dict[str, Any]:
    """``[(fp32 detections, quantized detections)]`` per image -> the figures above."""
    found = sum(len(ref) for ref, _ in pairs)
    kept = sum(len(cand) for _, cand in pairs)
    hits = sum(matched(ref, cand, iou) for ref, cand in pairs)
    return {
        "inputs": len(pairs),
        "match_iou": iou,
        "fp32_detections": found,
        "quantized_detections": kept,
        "matched": hits,
        "box_match_rate": round(2 * hits / (found + kept), 4) if found + kept else 1.0,
        "recall_vs_fp32": round(hits / found, 4) if found else 1.0,
        "precision_vs_fp32": round(hits / kept, 4) if kept else 1.0,
    }
