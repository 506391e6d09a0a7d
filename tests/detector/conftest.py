from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.featurizer_models import cached_test_store

# Eileen Collins' face in scikit-image's astronaut photo (512 x 512), normalized x, y, w, h:
# the box facenet-pytorch's own MTCNN (torch) draws, which also frames the face by eye.
ASTRONAUT_FACE = (0.354, 0.121, 0.169, 0.215)


@pytest.fixture(scope="session")
def detector_store() -> Path:
    """The face detector built once (fp32 and int8) per build inputs, cached for CI."""
    return cached_test_store(("face-detector",), ("fp32", "int8"))


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """astronaut.jpg (one face), coffee.jpg (none) and a synthetic PNG of shapes (none)."""
    import cv2
    import numpy as np

    from modules.camera.frames import jpeg_frame

    root = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("astronaut", "coffee"):
        out[name] = root / f"{name}.jpg"
        out[name].write_bytes(jpeg_frame(name))
    shapes = np.full((240, 320, 3), 90, np.uint8)
    cv2.circle(shapes, (100, 120), 50, (240, 200, 40), -1)
    cv2.rectangle(shapes, (190, 60), (290, 190), (30, 60, 220), -1)
    out["shapes"] = root / "shapes.png"
    assert cv2.imwrite(str(out["shapes"]), shapes)
    return out
