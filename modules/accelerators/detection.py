"""Pure decisions of a cascaded face detector (MTCNN): pyramid scales, proposal decoding, box
regression, squaring, non-maximum suppression, crops, and the detections' output format.

Boxes here are float pixel corners ``[x1, y1, x2, y2]`` of the image (x2, y2 exclusive); what
leaves the detector is normalized ``x, y, w, h`` (fractions of the image width and height).
Nothing here runs a network, so every step is testable with small arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    Floats = npt.NDArray[np.float32]

CELL = 12  # the P-Net's window side in pixels of the scaled image
STRIDE = 2  # the P-Net's output grid step (one 2x2 max pool)


@dataclass(frozen=True)
class Detection:
    """One detected object; ``box`` is normalized ``(x, y, w, h)``."""

    box: tuple[float, float, float, float]
    score: float
    class_id: int
    label: str

    def as_json(self) -> dict[str, Any]:
        x, y, w, h = self.box
        return {
            "box": {"x": x, "y": y, "w": w, "h": h},
            "class_id": self.class_id,
            "label": self.label,
            "score": self.score,
        }


def pyramid_scales(
    height: int, width: int, min_face: float = 20.0, factor: float = 0.709
) -> list[float]:
    """Scales at which the P-Net's 12-pixel window sees faces from ``min_face`` pixels up to the
    image's short side: 12 / min_face, shrinking by ``factor`` while the scaled short side still
    holds one window."""
    if min_face <= 0 or not 0 < factor < 1:
        raise ValueError("min_face must be > 0 and factor within (0, 1)")
    scale = CELL / min_face
    short = min(height, width)
    scales = []
    while short * scale >= CELL:
        scales.append(scale)
        scale *= factor
    return scales


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The pyramid level's (height, width): never below one P-Net window."""
    return max(CELL, math.ceil(height * scale)), max(CELL, math.ceil(width * scale))


def proposals(prob: Floats, reg: Floats, scale: float, threshold: float) -> tuple[Floats, Floats]:
    """P-Net outputs of one pyramid level -> (boxes [K, 5] = corners + score, regression [K, 4]).

    ``prob`` is the face probability grid [rows, cols]; ``reg`` the regression [4, rows, cols].
    Grid cell (r, c) is the window at (STRIDE * c, STRIDE * r) of side CELL in the scaled image.
    """
    rows, cols = np.nonzero(prob >= threshold)
    scores = prob[rows, cols].astype(np.float32)
    x1 = cols.astype(np.float32) * STRIDE / scale
    y1 = rows.astype(np.float32) * STRIDE / scale
    side = np.float32(CELL / scale)
    boxes = np.stack([x1, y1, x1 + side, y1 + side, scores], axis=1).astype(np.float32)
    deltas = reg[:, rows, cols].T.astype(np.float32)
    return boxes.reshape(-1, 5), deltas.reshape(-1, 4)


def area(boxes: Floats) -> Floats:
    return np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)


def nms(
    boxes: Floats, scores: Floats, threshold: float, mode: Literal["union", "min"] = "union"
) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression: indices kept, best score first. A box is dropped when its
    overlap with a kept one exceeds ``threshold``; overlap is intersection over union, or over
    the smaller box (``min``: drops a box inside a bigger one)."""
    order = np.argsort(-scores, kind="stable")
    areas = area(boxes)
    keep: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        ix1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        iy1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        ix2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        iy2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.maximum(ix2 - ix1, 0) * np.maximum(iy2 - iy1, 0)
        if mode == "min":
            denom = np.minimum(areas[best], areas[rest])
        else:
            denom = areas[best] + areas[rest] - inter
        overlap = np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.intp)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two normalized ``(x, y, w, h)`` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def regress(boxes: Floats, deltas: Floats) -> Floats:
    """Move each corner by its regression times the box's width (x) or height (y)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    out[:, 0] += deltas[:, 0] * w
    out[:, 1] += deltas[:, 1] * h
    out[:, 2] += deltas[:, 2] * w
    out[:, 3] += deltas[:, 3] * h
    return out


def square(boxes: Floats) -> Floats:
    """Each box grown to a square of its longer side around the same centre (the next stage
    takes square crops)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    cx = boxes[:, 0] + w / 2
    cy = boxes[:, 1] + h / 2
    out[:, 0] = cx - side / 2
    out[:, 1] = cy - side / 2
    out[:, 2] = cx + side / 2
    out[:, 3] = cy + side / 2
    return out


def pooled_windows(start: int, n: int, size: int) -> tuple[npt.NDArray[np.intp], ...]:
    """Adaptive average pooling of ``n`` pixels from ``start`` into ``size``: output i averages
    pixels start + floor(i * n / size) .. start + ceil((i + 1) * n / size) - 1 (shrinks by area,
    enlarges by repeating pixels). Returns (first, end) pixel per output, end exclusive."""
    i = np.arange(size)
    return start + (i * n) // size, start - ((-(i + 1) * n) // size)


def summed_area(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """[H + 1, W + 1, 3]: entry (r, c) is the sum of the pixels above and left of (r, c)."""
    height, width = rgb.shape[:2]
    table = np.zeros((height + 1, width + 1, 3), np.float64)
    table[1:, 1:] = rgb.cumsum(axis=0, dtype=np.float64).cumsum(axis=1)
    return table


def crops(
    rgb: npt.NDArray[np.uint8],
    boxes: Floats,
    size: int,
    table: npt.NDArray[np.float64] | None = None,
) -> Floats:
    """Each box's pixels (zero outside the image), pooled to size x size: [K, size, size, 3]
    float32 in pixel units. Window sums come from the image's summed-area table (``table``, or
    made here), so a crop costs size x size lookups whatever the box's size."""
    height, width = rgb.shape[:2]
    table = summed_area(rgb) if table is None else table
    out = np.zeros((len(boxes), size, size, 3), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(np.rint(boxes[:, :4]).astype(np.int64)):
        if x2 <= x1 or y2 <= y1:
            continue
        r0, r1 = pooled_windows(int(y1), int(y2 - y1), size)
        c0, c1 = pooled_windows(int(x1), int(x2 - x1), size)
        count = ((r1 - r0)[:, None] * (c1 - c0)[None, :])[:, :, None]
        r0, r1 = np.clip(r0, 0, height), np.clip(r1, 0, height)  # zeros outside add nothing
        c0, c1 = np.clip(c0, 0, width), np.clip(c1, 0, width)
        sums = (table[np.ix_(r1, c1)] - table[np.ix_(r0, c1)] - table[np.ix_(r1, c0)]) + table[
            np.ix_(r0, c0)
        ]
        out[i] = sums / count
    return out


def normalized_xywh(boxes: Floats, height: int, width: int) -> Floats:
    """Pixel corners -> ``(x, y, w, h)`` as fractions of the image, clipped to the image."""
    x1 = np.clip(boxes[:, 0], 0, width) / width
    y1 = np.clip(boxes[:, 1], 0, height) / height
    x2 = np.clip(boxes[:, 2], 0, width) / width
    y2 = np.clip(boxes[:, 3], 0, height) / height
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1).astype(np.float32).reshape(-1, 4)


# -- the detections on the wire -------------------------------------------------------------------

BOXES = "boxes"  # FP32 [1, N, 4]: normalized x, y, w, h
DETECTION_SCORES = "scores"  # FP32 [1, N]: confidence, best first
CLASSES = "classes"  # INT32 [1, N]: class id (index into the model's labels)
LABELS = "labels"  # BYTES [1, N]: the class names, UTF-8
DETECTION_OUTPUTS = (BOXES, DETECTION_SCORES, CLASSES, LABELS)


def detections_to_tensors(detections: Sequence[Detection]) -> dict[str, npt.NDArray[Any]]:
    """The documented tensor layout (a batch of one image, N detections best first)."""
    n = len(detections)
    return {
        BOXES: np.asarray([d.box for d in detections], np.float32).reshape(1, n, 4),
        DETECTION_SCORES: np.asarray([d.score for d in detections], np.float32).reshape(1, n),
        CLASSES: np.asarray([d.class_id for d in detections], np.int32).reshape(1, n),
        LABELS: np.asarray([d.label.encode() for d in detections], dtype=object).reshape(1, n),
    }


def detections_from_tensors(tensors: dict[str, npt.NDArray[Any]]) -> list[Detection]:
    """The inverse of ``detections_to_tensors`` (what a client does with an answer)."""
    boxes = np.asarray(tensors[BOXES], np.float32).reshape(-1, 4)
    scores = np.asarray(tensors[DETECTION_SCORES], np.float32).reshape(-1)
    classes = np.asarray(tensors[CLASSES]).reshape(-1)
    labels = np.asarray(tensors[LABELS], dtype=object).reshape(-1)
    return [
        Detection(
            box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
            score=float(s),
            class_id=int(c),
            label=lab.decode() if isinstance(lab, bytes) else str(lab),
        )
        for b, s, c, lab in zip(boxes, scores, classes, labels, strict=True)
    ]


# -- SSD (single shot): anchors, offsets, per-class NMS --------------------------------------------

# SSD300's six feature maps: cells a side, anchor sizes (fractions of 300 px), extra aspect ratios
SSD_MAPS = (38, 19, 10, 5, 3, 1)
SSD_SIZES = (30, 60, 111, 162, 213, 264, 315)  # min size of map k = SIZES[k], max = SIZES[k + 1]
SSD_RATIOS = ((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,))
SSD_VARIANCES = (0.1, 0.2)  # centre and size offsets are scaled by these


def ssd_anchors(image: int = 300) -> Floats:
    """[A, 4] anchors (cx, cy, w, h) as fractions of the image, cell by cell (row-major) and
    anchor by anchor within a cell, as the heads' outputs are laid out: per cell a square of the
    map's size, a square of the geometric mean of its size and the next, then each aspect ratio
    r as (s * sqrt(r), s / sqrt(r)) and its transpose (8732 anchors for SSD300)."""
    found: list[tuple[float, float, float, float]] = []
    for k, cells in enumerate(SSD_MAPS):
        small = SSD_SIZES[k] / image
        big = math.sqrt(SSD_SIZES[k] * SSD_SIZES[k + 1]) / image
        for row in range(cells):
            for col in range(cells):
                cx, cy = (col + 0.5) / cells, (row + 0.5) / cells
                found += [(cx, cy, small, small), (cx, cy, big, big)]
                for ratio in SSD_RATIOS[k]:
                    root = math.sqrt(ratio)
                    found += [
                        (cx, cy, small * root, small / root),
                        (cx, cy, small / root, small * root),
                    ]
    return np.asarray(found, np.float32)


def ssd_decode(offsets: Floats, anchors: Floats) -> Floats:
    """[A, 4] offsets -> [A, 4] corners (x1, y1, x2, y2) as fractions of the image."""
    centre = anchors[:, :2] + offsets[:, :2] * SSD_VARIANCES[0] * anchors[:, 2:]
    size = anchors[:, 2:] * np.exp(offsets[:, 2:] * SSD_VARIANCES[1])
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)


def class_detections(
    corners: Floats,
    probabilities: Floats,
    labels: Sequence[str],
    threshold: float,
    overlap: float,
    limit: int,
) -> list[Detection]:
    """Per class (column 0 is background): anchors at or above ``threshold``, NMS at IoU
    ``overlap``; then the best ``limit`` of all classes, as normalized (x, y, w, h) boxes."""
    found: list[Detection] = []
    for cls in range(1, probabilities.shape[1]):
        picked = np.nonzero(probabilities[:, cls] >= threshold)[0]
        scores = probabilities[picked, cls]
        for i in picked[nms(corners[picked], scores, overlap)]:
            x1, y1, x2, y2 = np.clip(corners[i], 0.0, 1.0)
            if x2 > x1 and y2 > y1:
                box = (float(x1), float(y1), float(x2 - x1), float(y2 - y1))
                found.append(Detection(box, float(probabilities[i, cls]), cls, labels[cls]))
    found.sort(key=lambda d: -d.score)
    return found[:limit]
