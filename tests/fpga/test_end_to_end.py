"""The device on the real EfficientNet-Lite0 featurizer: photos are classified right in bfp8."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modules.accelerators.classify import ImageClassifier
from modules.accelerators.fpga.client import DeviceProcess, start_device_process
from modules.accelerators.model_store import ModelStore
from modules.accelerators.select import open_accelerator
from tests.support.featurizer_models import copied_test_store

# The target is >= 0.99. With bias correction at load time (each conv bias absorbs the mean
# shift of its BFP weight rounding, from the calibration means stored in the fp32 artifact) bfp8
# agrees with fp32 on 0.995 of the 210 ``objects`` inputs (1 differs, a near-tie of fp32) and on
# 0.875 of ``hard``; before the correction 0.971 / 0.798. See docs/fpga-emulator.md.
BFP8_MIN_AGREEMENT = 0.99  # measured 0.995 (209/210)
BFP8_MIN_AGREEMENT_CLEAR = 0.99
BFP8_MIN_AGREEMENT_HARD = 0.85  # measured 0.875
CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE = {967, 968}  # espresso, cup


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    root = copied_test_store(
        tmp_path_factory.mktemp("models") / "store", precisions=("fp32",), calibration_count=4
    )
    return ModelStore(root)


@pytest.fixture(scope="module")
def device(store: ModelStore) -> Iterator[DeviceProcess]:
    root = Path(tempfile.mkdtemp(prefix="ef-fpga-"))
    proc = start_device_process("fpga9", root / "fpga9.sock", model_dir=store.root, flash_ms=50)
    yield proc
    proc.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_bfp8_classifies_the_photos_right(device: DeviceProcess, store: ModelStore) -> None:
    from skimage import data

    session = open_accelerator(
        "fpga-emulator", "efficientnet-lite0", "bfp8", store=store, device=str(device.path)
    )
    try:
        assert session.notice is None  # used the running device, did not start one
        classifier = ImageClassifier(session, store)
        top = classifier.classify([data.chelsea(), data.coffee()], k=5)
        assert top[0][0]["class_id"] in CATS, top[0]
        assert top[1][0]["class_id"] in COFFEE, top[1]
        latency = session.last_device_ms
        assert latency is not None and latency > 0
    finally:
        session.close()
    with device.client() as dev:
        st = dev.status()
        assert (st["model"], st["precision"]) == ("efficientnet-lite0", "bfp8")
        assert st["counters"]["images"] >= 2


def test_formats_differ_and_narrower_is_further_from_fp32(
    device: DeviceProcess, store: ModelStore
) -> None:
    from skimage import data

    from modules.accelerators.preprocess import preprocess_batch

    manifest = store.get("efficientnet-lite0")
    batch = preprocess_batch([data.chelsea(), data.coffee()], manifest.preprocessing)
    cpu = open_accelerator("cpu", "efficientnet-lite0", "fp32", store=store, warmup=0)
    reference = cpu.featurize(batch)
    cpu.close()
    errors = {}
    with device.client() as dev:
        for precision in ("bfp8", "msfp9", "msfp8"):
            dev.load("efficientnet-lite0", precision)
            result = dev.infer(batch)
            assert result.features.shape == (2, manifest.feature_dim)
            diff = np.linalg.norm(result.features - reference) / np.linalg.norm(reference)
            errors[precision] = float(diff)
    assert 0 < errors["bfp8"] < errors["msfp9"] < errors["msfp8"], errors


def test_bfp8_agrees_with_fp32_on_the_evaluation_set(
    device: DeviceProcess, store: ModelStore
) -> None:
    from modules.featurizer.agreement import MARGIN, agreement, probabilities, top1
    from modules.featurizer.build import preprocess_arrays
    from modules.featurizer.evalset import eval_images

    fp32 = open_accelerator("cpu", "efficientnet-lite0", "fp32", store=store)
    bfp8 = open_accelerator(
        "fpga-emulator", "efficientnet-lite0", "bfp8", store=store, device=str(device.path)
    )
    try:
        manifest = store.get("efficientnet-lite0")
        results = {}
        for name in ("objects", "hard"):
            batch = preprocess_arrays(eval_images(name), manifest.preprocessing)
            assert len(batch) >= 200
            reference = probabilities(ImageClassifier(fp32, store), batch)
            results[name] = agreement(reference, top1(ImageClassifier(bfp8, store), batch))
    finally:
        bfp8.close()
        fp32.close()
    result = results["objects"]
    assert result["top1_agreement_with_fp32"] >= BFP8_MIN_AGREEMENT, result
    assert result[f"top1_agreement_where_fp32_margin_ge_{MARGIN}"] >= BFP8_MIN_AGREEMENT_CLEAR
    assert results["hard"]["top1_agreement_with_fp32"] >= BFP8_MIN_AGREEMENT_HARD, results
