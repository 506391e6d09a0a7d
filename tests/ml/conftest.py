from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.featurizer_models import copied_test_store


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EfficientNet-Lite0 (fp32, int8, fp16) built once per test session."""
    return copied_test_store(
        tmp_path_factory.mktemp("models") / "store", precisions=("fp32", "int8", "fp16")
    )
