"""The one image preprocessing implementation used by every accelerator path and module.

decode (JPEG/PNG bytes or a path, or an RGB array) -> resize the short side -> center crop ->
scale + per-channel mean/std -> channel order -> NCHW (or NHWC) float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from modules.accelerators.model_store import Preprocessing

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    ImageSource: TypeAlias = str | Path | bytes | npt.NDArray[Any]


class ImageError(ValueError):
    """The input is not a decodable image."""


_INTERPOLATION = {"area": "INTER_AREA", "linear": "INTER_LINEAR", "cubic": "INTER_CUBIC"}


def decode_rgb(source: ImageSource) -> npt.NDArray[np.uint8]:
    """Return an HxWx3 uint8 RGB array. A numpy array input is taken as RGB (or gray/RGBA)."""
    import cv2
    import numpy as np

    if isinstance(source, np.ndarray):
        arr: npt.NDArray[Any] = source
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and float(arr.max()) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ImageError(f"expected an HxW, HxWx3 or HxWx4 array, got shape {arr.shape}")
        return np.ascontiguousarray(arr[:, :, :3])
    if isinstance(source, bytes | bytearray):
        data = np.frombuffer(source, dtype=np.uint8)
        name = "<bytes>"
    else:
        path = Path(source)
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise ImageError(f"cannot read image {path}: {exc.strerror or exc}") from exc
        name = str(path)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ImageError(f"{name} is not a decodable image (JPEG/PNG/BMP/...)")
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def resize_and_crop(rgb: npt.NDArray[Any], spec: Preprocessing) -> npt.NDArray[np.uint8]:
    """Resize so the short side is ``spec.resize_short_side``, then center-crop ``spec.crop``."""
    import cv2

    h, w = rgb.shape[:2]
    short = spec.resize_short_side
    if h <= w:
        nh, nw = short, max(short, round(w * short / h))
    else:
        nh, nw = max(short, round(h * short / w)), short
    if (nh, nw) != (h, w):
        shrinking = nh < h
        interp = cv2.INTER_AREA if shrinking else getattr(cv2, _INTERPOLATION[spec.interpolation])
        rgb = cv2.resize(rgb, (nw, nh), interpolation=interp)
    crop = spec.crop
    if nh < crop or nw < crop:
        raise ImageError(f"crop {crop} is larger than the resized image {nw}x{nh}")
    top, left = (nh - crop) // 2, (nw - crop) // 2
    return rgb[top : top + crop, left : left + crop]


def normalize(crop: npt.NDArray[np.uint8], spec: Preprocessing) -> npt.NDArray[np.float32]:
    """HxWx3 uint8 RGB -> 3xHxW (or HxWx3) float32 in the model's normalization."""
    import numpy as np

    if spec.channels == 1:
        import cv2

        crop = np.asarray(
            cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)[:, :, None], np.uint8
        )
    x = crop.astype(np.float32) * np.float32(spec.scale)
    x -= np.asarray(spec.mean[: spec.channels], dtype=np.float32)
    x /= np.asarray(spec.std[: spec.channels], dtype=np.float32)
    if spec.channel_order == "BGR":
        x = x[:, :, ::-1]
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def preprocess(source: ImageSource, spec: Preprocessing) -> npt.NDArray[np.float32]:
    """One image -> a batch of one: [1, 3, crop, crop] (NCHW) float32."""
    return normalize(resize_and_crop(decode_rgb(source), spec), spec)[None]


def preprocess_batch(
    sources: Sequence[ImageSource], spec: Preprocessing
) -> npt.NDArray[np.float32]:
    import numpy as np

    if not sources:
        raise ImageError("no images given")
    return np.concatenate([preprocess(s, spec) for s in sources], axis=0)
