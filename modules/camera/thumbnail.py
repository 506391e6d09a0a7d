"""JPEG thumbnails within a byte cap (the sizes and qualities to try come from ``policy``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modules.camera.policy import encode_attempts

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def encode_thumbnail(bgr: npt.NDArray[np.uint8], max_side: int, max_bytes: int) -> bytes | None:
    """The frame as a JPEG of at most ``max_bytes`` with no side over ``max_side``; None when
    even the smallest attempt is too big."""
    import cv2

    height, width = bgr.shape[:2]
    resized: dict[tuple[int, int], npt.NDArray[Any]] = {}
    for w, h, quality in encode_attempts(width, height, max_side):
        if (w, h) not in resized:
            resized[(w, h)] = (
                bgr
                if (w, h) == (width, height)
                else cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
            )
        ok, buf = cv2.imencode(".jpg", resized[(w, h)], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and buf.size <= max_bytes:
            return bytes(buf.tobytes())
    return None


BOX_COLOUR = (0, 255, 0)  # BGR


def draw_boxes(bgr: npt.NDArray[np.uint8], detections: list[dict[str, Any]]) -> npt.NDArray[Any]:
    """A copy of the frame with each detection's normalized box drawn and its label above it."""
    import cv2

    out = bgr.copy()
    height, width = out.shape[:2]
    thickness = max(2, round(max(height, width) / 200))
    for found in detections:
        box = found["box"]
        x1, y1 = round(box["x"] * width), round(box["y"] * height)
        x2, y2 = round((box["x"] + box["w"]) * width), round((box["y"] + box["h"]) * height)
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOUR, thickness)
        text = f"{found['label']} {found['score']:.2f}"
        cv2.putText(out, text, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, BOX_COLOUR, 1)
    return out


def jpeg(bgr: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("frame cannot be encoded as JPEG")
    return bytes(buf.tobytes())
