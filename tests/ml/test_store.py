"""The model store: manifest contents, content addressing and integrity checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modules.accelerators.model_store import (
    IntegrityError,
    ModelNotFoundError,
    ModelStore,
    imagenet_labels,
    sha256_file,
)

from .helpers import run_cli


def test_manifest_describes_the_built_model(model_dir: Path) -> None:
    store = ModelStore(model_dir)
    m = store.get("efficientnet-lite0")
    assert m.synthetic_weights is False
    assert m.precisions == ["fp16", "fp32", "int8"]
    assert m.featurizer_input.name == "images"
    assert m.featurizer_input.shape == ["batch", 3, 224, 224]
    assert m.featurizer_output.shape == ["batch", 1280] and m.feature_dim == 1280
    assert m.heads["default"].num_classes == 1000
    assert m.preprocessing.crop == 224 and m.preprocessing.channel_order == "RGB"
    assert 0.3e9 < m.featurizer_macs < 0.45e9  # EfficientNet-Lite0 is ~0.385 GMACs
    for artifact in [*m.featurizer.values(), m.heads["default"].artifact]:
        path = model_dir / artifact.file
        assert path.name.startswith(artifact.sha256)  # content-addressed
        assert sha256_file(path) == artifact.sha256
    assert store.verify("efficientnet-lite0") == []


def test_labels_ship_with_the_package() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[281] == "tabby" and labels[967] == "espresso"


def test_adding_the_same_bytes_twice_stores_one_blob(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    a, b = store.add_artifact(b"abc"), store.add_artifact(b"abc")
    assert a == b
    assert len(list((tmp_path / "blobs").iterdir())) == 1


def test_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="models build"):
        ModelStore(tmp_path).get("resnet50")
    result = run_cli(
        "models", "predict", "x.jpg", "--model", "resnet50", "--model-dir", str(tmp_path)
    )
    assert result.returncode == 1
    assert "models build resnet50" in result.stderr and "Traceback" not in result.stderr


def test_corrupted_artifact_is_detected(
    model_dir: Path,
    tmp_path: Path,
) -> None:
    copy = tmp_path / "store"
    shutil.copytree(model_dir, copy)
    store = ModelStore(copy)
    manifest = store.get("efficientnet-lite0")
    blob = copy / manifest.featurizer["int8"].file
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    blob.write_bytes(bytes(data))

    with pytest.raises(IntegrityError, match="corrupted"):
        store.featurizer_path("efficientnet-lite0", "int8")
    problems = store.verify("efficientnet-lite0")
    assert len(problems) == 1 and "featurizer.int8" in problems[0]

    verify = run_cli("models", "verify", "efficientnet-lite0", "--model-dir", str(copy), "--json")
    assert verify.returncode == 1
    assert json.loads(verify.stdout)["ok"] is False
    predict = run_cli(
        "models",
        "predict",
        str(tmp_path / "any.jpg"),
        "--precision",
        "int8",
        "--model-dir",
        str(copy),
    )
    assert predict.returncode == 1
    assert "corrupted" in predict.stderr and "Traceback" not in predict.stderr
    # the fp32 artifact is intact and still usable
    assert store.featurizer_path("efficientnet-lite0", "fp32").is_file()
