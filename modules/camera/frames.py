"""Frames from scikit-image's bundled photos (installed with the package; nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Sequence

# Color photos that ship inside the scikit-image wheel.
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


class FrameError(ValueError):
    """An unknown photo name or an image that cannot be encoded."""


def jpeg_frame(name: str, quality: int = 90) -> bytes:
    """The photo ``name`` as JPEG bytes."""
    import cv2
    from skimage import data

    if name not in PHOTOS:
        raise FrameError(f"unknown photo {name!r}; choose from {', '.join(PHOTOS)}")
    rgb = getattr(data, name)()
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise FrameError(f"cannot encode {name} as JPEG")
    return bytes(buf.tobytes())


def parse_photos(value: str | Sequence[str] | None) -> list[str]:
    """``"chelsea,coffee"`` or a list -> validated names; empty -> all photos."""
    if value is None:
        return list(PHOTOS)
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip() for n in names if n.strip()]
    for name in names:
        if name not in PHOTOS:
            raise FrameError(f"unknown photo {name!r}; choose from {', '.join(PHOTOS)}")
    return names or list(PHOTOS)
