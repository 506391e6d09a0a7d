"""Transfer learning: a head trained on featurizer outputs predicts its own classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from skimage import data

from .helpers import run_cli, write_image

SOURCES = {"cat": data.chelsea, "rocket": data.rocket, "coins": data.coins}


def _variant(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    h, w = image.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 0.9)), int(w * rng.uniform(0.6, 0.9))
    top, left = rng.integers(0, h - ch), rng.integers(0, w - cw)
    crop = image[top : top + ch, left : left + cw].astype(np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.clip(crop * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)


def test_trained_head_predicts_its_own_classes(model_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    train = tmp_path / "train"
    for label, source in SOURCES.items():
        for i in range(6):
            write_image(train / label / f"{i}.jpg", _variant(source(), rng))
    result = run_cli(
        "models",
        "train-head",
        "--featurizer",
        "efficientnet-lite0",
        "--images",
        str(train),
        "--name",
        "demo",
        "--model-dir",
        str(model_dir),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["labels"] == ["cat", "coins", "rocket"] and summary["images"] == 18
    assert summary["train_accuracy"] == 1.0

    held_out = {
        label: write_image(tmp_path / "test" / f"{label}.jpg", _variant(source(), rng))
        for label, source in SOURCES.items()
    }
    result = run_cli(
        "models",
        "predict",
        *map(str, held_out.values()),
        "--head",
        "demo",
        "--top",
        "3",
        "--precision",
        "fp32",
        "--model-dir",
        str(model_dir),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [entry["top"][0]["label"] for entry in out] == list(held_out)
    assert {t["class_id"] for t in out[0]["top"]} == {0, 1, 2}

    listing = json.loads(run_cli("models", "list", "--model-dir", str(model_dir), "--json").stdout)
    assert listing["models"][0]["heads"] == ["default", "demo"]


def test_train_head_needs_two_labelled_folders(model_dir: Path, tmp_path: Path) -> None:
    write_image(tmp_path / "only" / "a.jpg", data.chelsea())
    result = run_cli(
        "models",
        "train-head",
        "--featurizer",
        "efficientnet-lite0",
        "--images",
        str(tmp_path),
        "--model-dir",
        str(model_dir),
    )
    assert result.returncode == 1 and "at least two label folders" in result.stderr
