"""Deterministic image sets built from scikit-image's bundled photos (no download needed).

``eval_images()`` is the accuracy set (>= 200 augmented inputs); ``calibration_images()`` uses a
different seed so int8 calibration never sees the evaluation inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# Photos that ship inside the scikit-image wheel (gray ones are expanded to RGB).
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "clock",
    "coins",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "moon",
    "brick",
    "gravel",
)


def photo(name: str) -> npt.NDArray[np.uint8]:
    import numpy as np
    from skimage import data

    arr = np.asarray(getattr(data, name)())
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3].astype(np.uint8))


def augment(
    image: npt.NDArray[np.uint8], rng: np.random.Generator, strength: float = 1.0
) -> npt.NDArray[np.uint8]:
    """A random crop (55-100% of each side), a horizontal flip, a brightness/contrast change."""
    import numpy as np

    h, w = image.shape[:2]
    fh = rng.uniform(1.0 - 0.45 * strength, 1.0)
    fw = float(np.clip(fh * rng.uniform(0.8, 1.25), 0.5, 1.0))
    ch, cw = max(32, int(h * fh)), max(32, int(w * fw))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = image[top : top + ch, left : left + cw].astype(np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    brightness = rng.uniform(1.0 - 0.3 * strength, 1.0 + 0.3 * strength)
    contrast = rng.uniform(1.0 - 0.2 * strength, 1.0 + 0.2 * strength)
    mean = out.mean()
    out = (out - mean) * contrast + mean * brightness
    return np.ascontiguousarray(np.clip(out, 0, 255).astype(np.uint8))


def augmented_set(per_photo: int, seed: int) -> list[npt.NDArray[np.uint8]]:
    import numpy as np

    images = []
    for index, name in enumerate(PHOTOS):
        base = photo(name)
        rng = np.random.default_rng([seed, index])
        images.append(base)
        images += [augment(base, rng) for _ in range(per_photo - 1)]
    return images


def eval_images(per_photo: int = 16) -> list[npt.NDArray[np.uint8]]:
    """13 photos x 16 = 208 inputs (each photo itself plus 15 augmentations)."""
    return augmented_set(per_photo, seed=2024)


def calibration_images(count: int = 64) -> list[npt.NDArray[np.uint8]]:
    per_photo = max(1, -(-count // len(PHOTOS)))
    return augmented_set(per_photo, seed=7)[:count]
