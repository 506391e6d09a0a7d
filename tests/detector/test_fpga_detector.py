"""Detectors on the emulated FPGA card: the face detector's three networks flashed as one
bitstream (the P-Net at whatever size each pyramid level has) find the astronaut's face where
fp32 on the CPU does and nothing in coffee; served through POST /score on the card; an
imported detector with operators the card lacks is refused with their list and the card keeps
its model."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from modules.accelerators import detection as det
from modules.accelerators.detectors import open_detector
from modules.accelerators.fpga.client import (
    DeviceProcess,
    FpgaDevice,
    FpgaDeviceError,
    start_device_process,
)
from modules.accelerators.model_store import ModelStore
from modules.featurizer.evalset import photo
from tests.byom.cli import cli, import_detector
from tests.byom.models import conv_detector_graph, decoded_detector_graph
from tests.detector.conftest import ASTRONAUT_FACE
from tests.support.scoring import serving

KEY = "card-key"


@pytest.fixture(scope="module")
def store(detector_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built face detector, plus two imported detectors: one whose graph ends in ONNX
    NonMaxSuppression (operators the card lacks) and one the card runs."""
    root = tmp_path_factory.mktemp("card-store")
    target = root / "store"
    shutil.copytree(detector_store, target)
    nms = conv_detector_graph(root / "nms.onnx")
    run = import_detector(nms, "nms-detector", ["a", "b"], target)
    assert run.code == 0, run.err
    import_detector(
        decoded_detector_graph(root / "lamps.onnx"), "lamps", ["background", "lamp"], target,
        "--box-format", "yxyx", "--box-units", "normalized", "--json",
    ).json()  # fmt: skip
    return target


@pytest.fixture(scope="module")
def card(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeviceProcess]:
    sock = tmp_path_factory.mktemp("card") / "fpga.sock"
    proc = start_device_process("fpga-det", sock, model_dir=store, flash_ms=0)
    yield proc
    proc.stop()


def test_the_card_finds_the_astronauts_face_where_fp32_does_and_none_in_coffee(
    store: Path, card: DeviceProcess
) -> None:
    models = ModelStore(store)
    on_card = open_detector(
        models, "face-detector", "bfp8", accelerator="fpga-emulator", device=str(card.path)
    )
    cpu = open_detector(models, "face-detector", "fp32")
    try:
        (face,) = on_card.detect(photo("astronaut"))
        assert on_card.last_device_ms is not None and 0 < on_card.last_device_ms < 50
        (reference,) = cpu.detect(photo("astronaut"))
        assert det.iou(face.box, reference.box) >= 0.5
        assert det.iou(face.box, ASTRONAUT_FACE) >= 0.5
        assert on_card.detect(photo("coffee")) == []
        assert "fpga-emulator" in on_card.engine and "bfp8" in on_card.engine
    finally:
        on_card.close()
        cpu.close()
    status = card.client().status()
    assert status["model"] == "face-detector" and status["networks"] == ["pnet", "rnet", "onet"]
    assert status["counters"]["inferences"] >= 3


def test_the_pnet_runs_at_any_size_and_its_cycles_follow_the_size(
    store: Path, card: DeviceProcess
) -> None:
    with card.client() as dev:
        dev.load("face-detector", "bfp8")
        small = dev.infer(np.zeros((1, 3, 24, 24), np.float32), "pnet")
        large = dev.infer(np.zeros((1, 3, 240, 320), np.float32), "pnet")
        assert small.outputs["prob"].shape == (1, 1, 7, 7)  # 12-pixel windows at stride 2
        assert large.outputs["prob"].shape == (1, 1, 115, 155)
        assert large.outputs["reg"].shape == (1, 4, 115, 155)
        assert large.latency["compute_ms"] > 100 * small.latency["compute_ms"]
        assert large.device_ms > small.device_ms
        with pytest.raises(FpgaDeviceError) as fixed:  # the R-Net's input stays 24 x 24
            dev.infer(np.zeros((1, 3, 48, 48), np.float32), "rnet")
        assert fixed.value.code == "bad_request" and "rnet takes [N, 3, 24, 24]" in str(fixed.value)
        with pytest.raises(FpgaDeviceError, match="name one with 'network'"):
            dev.infer(np.zeros((1, 3, 24, 24), np.float32))


def test_a_detector_with_operators_the_card_lacks_is_refused_and_the_card_keeps_its_model(
    card: DeviceProcess,
) -> None:
    with FpgaDevice(card.path) as dev:
        dev.load("face-detector", "bfp8")
        with pytest.raises(FpgaDeviceError) as refused:
            dev.load("nms-detector", "bfp8")
        assert refused.value.code == "unsupported_ops"
        assert "Cast, GatherND, NonMaxSuppression, Tanh" in str(refused.value)
        status = dev.status()
        assert (status["model"], status["precision"]) == ("face-detector", "bfp8")
        loaded = dev.load("lamps", "bfp8")  # an imported detector within the card's set
        assert loaded["networks"]["detector"]["outputs"] == [
            "detection_boxes", "detection_scores", "detection_classes",
        ]  # fmt: skip


def test_serve_answers_with_the_face_found_on_the_card(
    store: Path, card: DeviceProcess, tmp_path: Path
) -> None:
    from modules.camera.frames import jpeg_frame

    with serving(
        store, tmp_path, "--model", "face-detector", "--accelerator", "fpga-emulator",
        "--device", str(card.path), "--keys", KEY,
    ) as server:  # fmt: skip
        answer = httpx.post(
            f"{server.http_url}/score", content=jpeg_frame("astronaut"),
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "image/jpeg"},
            timeout=60,
        )  # fmt: skip
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert (doc["accelerator"], doc["precision"]) == ("fpga-emulator", "bfp8")
    assert doc["deviceMs"] > 0
    (face,) = doc["detections"]
    box = face["box"]
    assert det.iou((box["x"], box["y"], box["w"], box["h"]), ASTRONAUT_FACE) >= 0.5


def test_serve_refuses_a_detector_with_operators_the_card_lacks_naming_them(store: Path) -> None:
    run = cli("serve", "--model", "nms-detector", "--accelerator", "fpga-emulator",
              "--model-dir", str(store), "--grpc-port", "-1", "--http-port", "-1")  # fmt: skip
    assert run.code == 1 and "Traceback" not in run.err
    assert "cannot open nms-detector on fpga-emulator" in run.err
    assert "operators the emulated card does not run: Cast, GatherND, NonMaxSuppression" in run.err


def test_bench_reports_the_card_beside_the_fp32_cpu_baseline(
    store: Path, card: DeviceProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # two of the bench's five photos keep the test short: one face, and none
    monkeypatch.setattr("composition.bench.detector.PHOTOS", ("astronaut", "coffee"))
    report = cli("bench", "featurizer", "--model", "face-detector", "--accelerator",
                 "fpga-emulator", "--precision", "bfp8", "--device", str(card.path),
                 "--iterations", "1", "--seconds", "5", "--model-dir", str(store),
                 "--json").json()  # fmt: skip
    assert report["accelerator"] == "fpga-emulator" and list(report["runs"]) == ["fp32", "bfp8"]
    fp32, bfp8 = report["runs"]["fp32"], report["runs"]["bfp8"]
    assert fp32["accelerator"] == "cpu" and "emulated_device_ms" not in fp32
    assert bfp8["accelerator"] == "fpga-emulator" and "fpga-emulator" in bfp8["engine"]
    assert 0 < bfp8["emulated_device_ms"]["p50_ms"] < fp32["p50_ms"]
    assert bfp8["card_peak_gmacs"] == pytest.approx(1843.2)
    assert 0 < bfp8["fraction_of_peak"] < 1
    assert report["photos"]["astronaut"]["bfp8_boxes"] == 1
    assert report["photos"]["coffee"]["bfp8_boxes"] == 0
    assert list(report["photos"]) == ["astronaut", "coffee"]
    assert bfp8["box_agreement"]["match_rate"] == 1.0 and bfp8["box_agreement"]["extra_boxes"] == 0
    refused = cli("bench", "featurizer", "--model", "face-detector", "--accelerator",
                  "fpga-emulator", "--precision", "int8", "--model-dir", str(store))  # fmt: skip
    assert refused.code == 1 and "one BFP precision" in refused.err


def test_the_camera_modules_detector_runs_on_the_card(store: Path, card: DeviceProcess) -> None:
    from modules.accelerators.classifier_config import ClassifierConfig
    from modules.camera.scorer import open_frame_scorer

    config = ClassifierConfig(
        model="face-detector", model_dir=str(store), accelerator="fpga-emulator",
        precision="bfp8", device=str(card.path),
    )  # fmt: skip
    scorer = open_frame_scorer(config)
    try:
        assert scorer.session.accelerator == "fpga-emulator"
        found, device_ms = scorer.score(np.ascontiguousarray(photo("astronaut")[:, :, ::-1]), 5)
    finally:
        scorer.close()
    (face,) = found
    box = face["box"]
    assert det.iou((box["x"], box["y"], box["w"], box["h"]), ASTRONAUT_FACE) >= 0.5
    assert device_ms is not None and device_ms > 0
