"""A test video made from the photos that ship with scikit-image (for the bench and tests)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from modules.camera.frames import PHOTOS


def write_photo_video(
    path: Path,
    fps: float = 30.0,
    seconds_per_photo: float = 1.0,
    photos: Sequence[str] = PHOTOS,
    size: tuple[int, int] = (640, 480),
) -> dict[str, range]:
    """Write an MJPEG ``.avi`` showing each photo in turn; returns each photo's frame numbers."""
    import cv2
    from skimage import data

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write an MJPEG video to {path}")
    per_photo = max(1, round(fps * seconds_per_photo))
    spans: dict[str, range] = {}
    try:
        for i, name in enumerate(photos):
            rgb = getattr(data, name)()
            frame = cv2.resize(
                cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), size, interpolation=cv2.INTER_AREA
            )
            for _ in range(per_photo):
                writer.write(frame)
            spans[name] = range(i * per_photo, (i + 1) * per_photo)
    finally:
        writer.release()
    return spans
