"""Deterministic image sets built from the photos bundled in the scikit-image wheel (no download).

Two evaluation sets (``EVAL_SETS``):

* ``objects`` (the default, the headline accuracy set): the bundled photos that show ImageNet
  objects and that fp32 EfficientNet-Lite0 names sensibly — chelsea (tabby/tiger cat), coffee
  (espresso), rocket (missile), camera (tripod), the stereo motorcycle pair (moped) — with
  moderate deterministic augmentations (crops of 70-100 % per side, flips, brightness +-15 %,
  contrast +-10 %): 6 x 35 = 210 inputs.
* ``hard``: the former set — 13 photos, most of them not ImageNet objects (textures, microscopy,
  astronomy, coins, ...), with strong augmentations (crops down to 55 % per side, brightness
  +-30 %): 13 x 16 = 208 inputs. fp32 is near a tie on many of them, so it measures the set's
  sensitivity as much as a precision's error; it is kept and reported beside ``objects``.

``calibration_images()`` draws from the ``objects`` photos with another seed, so int8 calibration
never sees an evaluation input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# Bundled photos of ImageNet objects (the fp32 top-1 of the unaugmented photo in brackets).
OBJECT_PHOTOS = (
    "chelsea",  # tiger cat
    "coffee",  # espresso
    "rocket",  # missile
    "camera",  # tripod
    "motorcycle_left",  # moped
    "motorcycle_right",  # moped
)
# The former evaluation set (textures, microscopy, astronomy, ... besides a few objects).
HARD_PHOTOS = (
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
PHOTOS = OBJECT_PHOTOS
EVAL_SETS = ("objects", "hard")


def photo(name: str) -> npt.NDArray[np.uint8]:
    """One bundled photo as RGB uint8 (gray ones expanded to three channels)."""
    import numpy as np
    from skimage import data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        arr = np.asarray(left if name.endswith("left") else right)
    else:
        arr = np.asarray(getattr(data, name)())
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3].astype(np.uint8))


def augment(
    image: npt.NDArray[np.uint8],
    rng: np.random.Generator,
    crop: float = 0.45,
    brightness: float = 0.3,
    contrast: float = 0.2,
    min_width: float = 0.5,
) -> npt.NDArray[np.uint8]:
    """A random crop (``1 - crop`` to 100 % of the height; the width follows with an aspect change
    of 0.8-1.25, kept within ``min_width`` to 100 %), a horizontal flip half of the time, a
    brightness (+-``brightness``) and contrast (+-``contrast``) change."""
    import numpy as np

    h, w = image.shape[:2]
    fh = rng.uniform(1.0 - crop, 1.0)
    fw = float(np.clip(fh * rng.uniform(0.8, 1.25), min_width, 1.0))
    ch, cw = max(32, int(h * fh)), max(32, int(w * fw))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = image[top : top + ch, left : left + cw].astype(np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    gain = rng.uniform(1.0 - brightness, 1.0 + brightness)
    stretch = rng.uniform(1.0 - contrast, 1.0 + contrast)
    mean = out.mean()
    out = (out - mean) * stretch + mean * gain
    return np.ascontiguousarray(np.clip(out, 0, 255).astype(np.uint8))


def _moderate(image: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    return augment(image, rng, crop=0.3, brightness=0.15, contrast=0.1, min_width=0.7)


def augmented_set(
    photos: tuple[str, ...],
    per_photo: int,
    seed: int,
    transform: Callable[[npt.NDArray[np.uint8], np.random.Generator], npt.NDArray[np.uint8]],
    include_original: bool = True,
) -> list[npt.NDArray[np.uint8]]:
    import numpy as np

    images = []
    for index, name in enumerate(photos):
        base = photo(name)
        rng = np.random.default_rng([seed, index])
        count = per_photo
        if include_original:
            images.append(base)
            count -= 1
        images += [transform(base, rng) for _ in range(count)]
    return images


def eval_images(
    eval_set: str = "objects", per_photo: int | None = None
) -> list[npt.NDArray[np.uint8]]:
    """``objects``: 6 photos x 35 = 210 inputs; ``hard``: 13 x 16 = 208 (each photo itself plus
    its augmentations)."""
    if eval_set == "objects":
        return augmented_set(OBJECT_PHOTOS, per_photo or 35, 2024, _moderate)
    if eval_set == "hard":
        return augmented_set(HARD_PHOTOS, per_photo or 16, 2024, augment)
    raise ValueError(f"unknown evaluation set {eval_set!r} (known: {', '.join(EVAL_SETS)})")


def calibration_images(count: int = 64) -> list[npt.NDArray[np.uint8]]:
    """Augmented views of the ``objects`` photos under another seed (never an eval input)."""
    per_photo = max(1, -(-count // len(OBJECT_PHOTOS)))
    return augmented_set(OBJECT_PHOTOS, per_photo, 7, _moderate, include_original=False)[:count]
