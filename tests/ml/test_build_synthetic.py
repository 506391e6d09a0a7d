"""A synthetic-weight featurizer (ResNet-50) builds, is labelled so and has the seed's shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from modules.accelerators.model_store import ModelStore

from .helpers import run_cli


def test_resnet50_builds_with_synthetic_weights_labelled(tmp_path: Path) -> None:
    result = run_cli(
        "models",
        "build",
        "resnet50",
        "--precision",
        "fp32",
        "--calibration-images",
        "8",
        "--model-dir",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "SYNTHETIC WEIGHTS" in result.stdout
    manifest = ModelStore(tmp_path).get("resnet50")
    assert manifest.synthetic_weights and manifest.heads["default"].synthetic_weights
    assert manifest.feature_dim == 2048 and manifest.precisions == ["fp32"]
    assert 4.0e9 < manifest.featurizer_macs < 4.2e9  # ResNet-50: 4.09 GMACs

    session = ort.InferenceSession(str(ModelStore(tmp_path).featurizer_path("resnet50")))
    batch = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    (features,) = session.run(None, {"images": batch})
    assert features.shape == (2, 2048) and np.isfinite(features).all()
    assert features.std() > 0  # BatchNorm re-estimation keeps activations alive

    listing = json.loads(run_cli("models", "list", "--model-dir", str(tmp_path), "--json").stdout)
    assert listing["models"][0]["synthetic_weights"] is True
