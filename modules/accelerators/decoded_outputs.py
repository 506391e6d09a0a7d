"""Imported detectors whose graph already ends in decoded detections (NMS inside the graph, as
torchvision's and TensorFlow's object-detection exports do): which outputs are the boxes,
scores and classes, and how their boxes turn into the normalized ``x, y, w, h`` that every
protocol serves (``detection.Detection``).

Pure: the import inspects output names and shapes with ``find_outputs``; the detector calls
``decode`` on the arrays the network returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from modules.accelerators.detection import Detection

if TYPE_CHECKING:
    import numpy.typing as npt

BoxFormat = Literal["xyxy", "yxyx", "xywh", "cxcywh"]
BoxUnits = Literal["pixels", "normalized"]
BOX_FORMATS: tuple[BoxFormat, ...] = ("xyxy", "yxyx", "xywh", "cxcywh")
BOX_UNITS: tuple[BoxUnits, ...] = ("pixels", "normalized")


class OutputsNotFound(ValueError):
    """The graph's outputs are not boxes + scores (+ classes); the message says what it has."""


@dataclass(frozen=True)
class DetectionOutputs:
    boxes: str
    scores: str
    classes: str | None  # None: every detection is class 0


def find_outputs(outputs: Sequence[Mapping[str, Any]]) -> DetectionOutputs:
    """Name the boxes (a name with ``box``, last dimension 4), scores (``score``) and classes
    (``class`` or ``label``, optional) among ``[{"name", "shape"}]``."""

    def named(*parts: str) -> list[Mapping[str, Any]]:
        return [o for o in outputs if any(p in str(o["name"]).lower() for p in parts)]

    def last_dim(out: Mapping[str, Any]) -> object:
        shape = out.get("shape")
        return shape[-1] if isinstance(shape, list) and shape else None

    boxes = [o for o in named("box") if last_dim(o) in (4, None) or isinstance(last_dim(o), str)]
    scores = [o for o in named("score") if o not in boxes]
    classes = [o for o in named("class", "label") if o not in boxes and o not in scores]
    if len(boxes) != 1 or len(scores) != 1 or len(classes) > 1:
        have = ", ".join(f"{o['name']}{o.get('shape')}" for o in outputs)
        raise OutputsNotFound(
            "a detector needs one boxes output (name with 'box', [.., N, 4]), one scores output "
            f"(name with 'score') and at most one classes output ('class'/'label'); this model "
            f"has {have}"
        )
    return DetectionOutputs(
        str(boxes[0]["name"]),
        str(scores[0]["name"]),
        str(classes[0]["name"]) if classes else None,
    )


def to_normalized_xywh(
    boxes: npt.NDArray[np.float32],
    box_format: BoxFormat,
    box_units: BoxUnits,
    height: int,
    width: int,
) -> npt.NDArray[np.float32]:
    """[N, 4] boxes of ``box_format`` -> [N, 4] normalized ``x, y, w, h``, clipped to the image."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if box_format == "xyxy":
        x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    elif box_format == "yxyx":
        y1, x1, y2, x2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    elif box_format == "xywh":
        x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    elif box_format == "cxcywh":
        x1, y1 = b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2
        x2, y2 = b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
    else:
        raise ValueError(f"unknown box format {box_format!r} (known: {', '.join(BOX_FORMATS)})")
    if box_units == "pixels":
        x1, x2 = x1 / width, x2 / width
        y1, y2 = y1 / height, y2 / height
    x1, x2 = np.clip(x1, 0, 1), np.clip(x2, 0, 1)
    y1, y2 = np.clip(y1, 0, 1), np.clip(y2, 0, 1)
    out = np.stack([x1, y1, np.maximum(x2 - x1, 0), np.maximum(y2 - y1, 0)], axis=1)
    return np.asarray(out, np.float32)


def decode(
    boxes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    classes: npt.NDArray[np.generic] | None,
    *,
    box_format: BoxFormat,
    box_units: BoxUnits,
    height: int,
    width: int,
    labels: Sequence[str],
    threshold: float,
    max_detections: int,
) -> list[Detection]:
    """The network's detections of one image (a leading batch dimension of 1 is dropped), at or
    above ``threshold``, best first, at most ``max_detections``; boxes with no area are dropped.
    A class id outside ``labels`` is labelled by its number."""
    flat_scores = np.asarray(scores, np.float32).reshape(-1)
    xywh = to_normalized_xywh(boxes, box_format, box_units, height, width)
    if len(xywh) != len(flat_scores):
        raise ValueError(f"{len(xywh)} boxes but {len(flat_scores)} scores")
    ids = (
        np.zeros(len(flat_scores), np.int64)
        if classes is None
        else np.rint(np.asarray(classes, np.float64).reshape(-1)).astype(np.int64)
    )
    if len(ids) != len(flat_scores):
        raise ValueError(f"{len(ids)} classes but {len(flat_scores)} scores")
    keep = (flat_scores >= threshold) & (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
    order = [int(i) for i in np.argsort(-flat_scores, kind="stable") if keep[i]]
    out = []
    for i in order[:max_detections]:
        class_id = int(ids[i])
        label = labels[class_id] if 0 <= class_id < len(labels) else str(class_id)
        x, y, w, h = (round(float(v), 6) for v in xywh[i])
        out.append(Detection((x, y, w, h), round(float(flat_scores[i]), 6), class_id, label))
    return out
