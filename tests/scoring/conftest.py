from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.featurizer_models import copied_test_store
from tests.support.scoring import ServeProcess, serving

KEYS = ("key-one", "key-two")
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copied_test_store(
        tmp_path_factory.mktemp("models") / "store", precisions=("fp32",), calibration_count=4
    )


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """chelsea.jpg, coffee.jpg and coffee.png (scikit-image's photos)."""
    import cv2
    from skimage import data

    from modules.camera.frames import jpeg_frame

    root = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("chelsea", "coffee"):
        out[f"{name}.jpg"] = root / f"{name}.jpg"
        out[f"{name}.jpg"].write_bytes(jpeg_frame(name))
    out["coffee.png"] = root / "coffee.png"
    assert cv2.imwrite(str(out["coffee.png"]), cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR))
    return out


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """``edgefleet serve`` on the CPU with two keys, gRPC and HTTP on free ports."""
    with serving(
        model_dir, tmp_path_factory.mktemp("serve"), "--keys", ",".join(KEYS), "--queue", "2"
    ) as proc:
        yield proc
