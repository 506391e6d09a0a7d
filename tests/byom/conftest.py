from __future__ import annotations

from pathlib import Path

import pytest

from tests.byom.models import nhwc_graph, torch_cnns

LABELS = ["circle", "square", "stripe", "blank"]
COLORS = ["red", "green", "blue"]


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test models, a labels file and a directory of small generated photos."""
    import cv2
    import numpy as np

    root = tmp_path_factory.mktemp("byom")
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        img = np.full((48, 64, 3), rng.integers(0, 255, 3), np.uint8)
        centre = (int(rng.integers(10, 54)), int(rng.integers(10, 38)))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.circle(img, centre, int(rng.integers(5, 15)), colour, -1)
        cv2.imwrite(str(images / f"{i:02d}.png"), img)
    cnn, dynamic = torch_cnns(root / "cnn.onnx", root / "dynamic.onnx")
    return {
        "cnn": cnn,
        "dynamic": dynamic,
        "nhwc": nhwc_graph(root / "nhwc.onnx", labels=COLORS),
        "labels": root / "labels.txt",
        "images": images,
    }
