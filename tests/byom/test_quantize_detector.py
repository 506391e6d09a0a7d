"""`edgefleet models quantize` on an imported detector that ends in NMS: calibrated on one split
of shipped photos, judged by its box match rate with fp32 on the other, stored, served by
`edgefleet serve --precision int8` with fp32's boxes, and flagged (serve warns) below the
threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from modules.accelerators.detection import Detection
from modules.featurizer.box_match import match_report, matched
from tests.byom.cli import cli, import_detector
from tests.byom.models import conv_detector_graph, nhwc_graph
from tests.support.scoring import serving

KEY = "blob-key"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")


def shipped_photo(name: str) -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent / name


def score(url: str, photo: Path) -> dict[str, Any]:
    answer = httpx.post(
        f"{url}/score", content=photo.read_bytes(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "image/jpeg"}, timeout=60,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 photos: four overlapping corners of each of five of scikit-image's colour photos."""
    import skimage.data

    out = tmp_path_factory.mktemp("calibration")
    for name in PHOTOS:
        rgb = getattr(skimage.data, name)()[..., :3]
        h, w = rgb.shape[:2]
        for i, (y, x) in enumerate(((0, 0), (0, w // 3), (h // 3, 0), (h // 3, w // 3))):
            crop = np.ascontiguousarray(rgb[y : y + 2 * h // 3, x : x + 2 * w // 3, ::-1])
            assert cv2.imwrite(str(out / f"{name}-{i}.png"), cv2.resize(crop, (160, 160)))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("detquant")
    run = import_detector(
        conv_detector_graph(root / "blobs.onnx"), "blobs", ["warm", "cool"], root / "store"
    )
    assert run.code == 0, run.err
    return root / "store"


@pytest.fixture(scope="module")
def int8_report(store: Path, calibration: Path) -> dict[str, Any]:
    report: dict[str, Any] = cli(
        "models", "quantize", "blobs", "--calibration", str(calibration), "--precision", "int8",
        "--holdout", "0.3", "--model-dir", str(store), "--json",
    ).json()  # fmt: skip
    return report


def test_int8_reports_box_match_rate_and_latency_and_is_stored(
    int8_report: dict[str, Any], store: Path
) -> None:
    report = int8_report
    assert report["kind"] == "detector" and report["precision"] == "int8"
    assert (report["calibration_images"], report["holdout_images"]) == (14, 6)
    assert report["fp32_detections"] >= 10 and report["match_iou"] == 0.5
    assert report["box_match_rate"] >= 0.85
    assert report["recall_vs_fp32"] >= 0.8 and report["precision_vs_fp32"] >= 0.8
    assert report["fp32_ms"] > 0 and report["quantized_ms"] > 0
    (row,) = cli("models", "list", "--model-dir", str(store), "--json").json()["models"]
    assert row["precisions"] == ["fp32", "int8"]
    assert _float_after_the_head(store)
    assert row["agreement"]["int8"] == report["box_match_rate"]
    assert ("int8" in row["flagged"]) == (report["box_match_rate"] < 0.98)


def test_served_int8_finds_fp32s_boxes_on_a_shipped_photo(
    int8_report: dict[str, Any], store: Path, tmp_path: Path
) -> None:
    from modules.accelerators.detectors import open_detector
    from modules.accelerators.model_store import ModelStore
    from modules.accelerators.preprocess import decode_rgb

    photo = shipped_photo("hubble_deep_field.jpg")  # not among the calibration photos
    reference = open_detector(ModelStore(store), "blobs", "fp32").detect(decode_rgb(photo))
    with serving(store, tmp_path, "--model", "blobs", "--precision", "int8", "--keys", KEY) as s:
        doc = score(s.http_url, photo)
    assert doc["precision"] == "int8"
    served = [
        Detection((b["x"], b["y"], b["w"], b["h"]), d["score"], d["class_id"], d["label"])
        for d in doc["detections"]
        for b in [d["box"]]
    ]
    assert len(reference) >= 10 and {d.label for d in served} == {"warm", "cool"}
    assert match_report([(reference, served)])["box_match_rate"] >= 0.9


def test_a_precision_below_the_threshold_is_flagged_and_serve_warns(
    store: Path, calibration: Path, tmp_path: Path
) -> None:
    """msfp9 (the FPGA emulator's 3-bit mantissas) moves scores across the served threshold
    more often than int8: with the threshold at 1.0 it is flagged."""
    run = cli(
        "models", "quantize", "blobs", "--calibration", str(calibration), "--precision", "msfp9",
        "--threshold", "1.0", "--model-dir", str(store),
    )  # fmt: skip
    assert run.code == 0, run.err
    assert "box match rate with fp32" in run.out and "recall" in run.out
    assert "msfp9 is stored but flagged" in run.err
    (row,) = cli("models", "list", "--model-dir", str(store), "--json").json()["models"]
    assert "msfp9" in row["flagged"] and row["agreement"]["msfp9"] < 1.0
    photo = shipped_photo("hubble_deep_field.jpg")
    args = ("--model", "blobs", "--precision", "msfp9", "--keys", KEY)
    with serving(store, tmp_path, *args) as server:
        log = server.output()
        doc = score(server.http_url, photo)
    assert "warning: blobs msfp9 matched fewer of fp32's boxes on held-out images" in log
    assert doc["precision"] == "msfp9" and "FPGA emulator's msfp9 numerics" in doc["engine"]
    assert doc["detections"]


def test_bad_input_is_one_line(store: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()

    def quantize(*args: str) -> str:
        run = cli("models", "quantize", *args, "--model-dir", str(store))
        assert run.code == 1 and "Traceback" not in run.err
        assert len(run.err.strip().splitlines()) == 1, run.err
        return run.err

    assert "need at least 4 images, found 0" in quantize("blobs", "--calibration", str(empty))
    assert "not a directory" in quantize("blobs", "--calibration", str(tmp_path / "nowhere"))
    assert "--precision 'fp16'" in quantize(
        "blobs", "--calibration", str(empty), "--precision", "fp16"
    )
    run = cli("models", "import", str(nhwc_graph(tmp_path / "k.onnx")), "--name", "keras",
              "--model-dir", str(store))  # fmt: skip
    assert run.code == 0, run.err
    assert "--iou is for detectors" in quantize(
        "keras", "--calibration", str(empty), "--iou", "0.7"
    )


def test_matching_is_one_to_one_by_class_at_the_iou() -> None:
    def box(x: float, cls: int = 0, score: float = 0.9) -> Detection:
        return Detection((x, 0.0, 0.2, 0.2), score, cls, str(cls))

    fp32 = [box(0.0), box(0.5, cls=1)]
    assert matched(fp32, [box(0.06)], 0.5) == 1  # IoU 0.54
    assert matched(fp32, [box(0.07)], 0.5) == 0  # IoU 0.48
    assert matched(fp32, [box(0.5, cls=0)], 0.5) == 0  # same place, other class
    assert matched(fp32, [box(0.0), box(0.01, score=0.95)], 0.5) == 1  # one fp32 box, one match
    report = match_report([(fp32, [box(0.0)]), ([], [])])
    assert (report["recall_vs_fp32"], report["precision_vs_fp32"]) == (0.5, 1.0)
    assert report["box_match_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert match_report([([], [])])["box_match_rate"] == 1.0


def _float_after_the_head(store: Path) -> bool:
    """The stored int8 graph decodes in float: its score activation reads the head Conv's
    float output, not a dequantized one."""
    import onnx

    from modules.accelerators.model_store import ModelStore

    models = ModelStore(store)
    graph = onnx.load(str(models.resolve(models.get("blobs").featurizer["int8"]))).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    sigmoid = next(node for node in graph.node if node.op_type == "Sigmoid")
    return "QuantizeLinear" in producer.values() and all(
        producer.get(name) != "DequantizeLinear" for name in sigmoid.input
    )
