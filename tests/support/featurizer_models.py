"""Build featurizer models once into a temporary model store (for tests of any area).

Usage in a conftest: ``store_dir = build_test_store(tmp_path_factory.mktemp("models"))``; then
pass ``--model-dir store_dir`` to the CLI or ``ModelStore(store_dir)`` in code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def build_test_store(
    root: Path,
    models: Sequence[str] = ("efficientnet-lite0",),
    precisions: Sequence[str] = ("fp32", "int8", "fp16"),
    calibration_count: int = 64,
) -> Path:
    from modules.accelerators.model_store import ModelStore
    from modules.featurizer.build import build_model

    store = ModelStore(root)
    for name in models:
        build_model(name, store, precisions, calibration_count)
    return root
