"""A user's detector whose graph ends in decoded detections (TensorFlow's export style),
imported and served: POST /score (httpx) and the Open Inference Protocol (tritonclient) give
the same boxes, in the normalized x, y, w, h every detector serves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from modules.accelerators import detection as det
from tests.byom.cli import cli, import_detector
from tests.byom.models import decoded_detector_graph
from tests.support.scoring import ServeProcess, serving

KEY = "lamp-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LAMP_BOX = {
    "x": 0.125,
    "y": 0.25,
    "w": 0.5,
    "h": 0.5,
}  # the graph's yxyx (0.25, 0.125, 0.75, 0.625)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("detector")
    graph = decoded_detector_graph(root / "tiny.onnx")
    found = import_detector(
        graph, "lamps", ["background", "lamp"], root / "store",
        "--box-format", "yxyx", "--box-units", "normalized", "--json",
    ).json()  # fmt: skip
    assert found["kind"] == "detector"
    return root / "store"


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with serving(
        store, tmp_path_factory.mktemp("serve"), "--model", "lamps", "--keys", KEY
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("photos")
    out = {}
    for name, value in (("bright", 255), ("dark", 0)):
        out[name] = root / f"{name}.png"
        assert cv2.imwrite(str(out[name]), np.full((48, 80, 3), value, np.uint8))
    return out


def test_import_says_what_it_reads_and_list_shows_a_detector(store: Path, tmp_path: Path) -> None:
    run = cli(
        "models", "import", str(decoded_detector_graph(tmp_path / "t.onnx")), "--name", "other",
        "--kind", "detector", "--box-format", "yxyx", "--model-dir", str(tmp_path / "s"),
    )  # fmt: skip
    assert run.code == 0, run.err
    assert "boxes detection_boxes (yxyx, pixels), scores detection_scores" in run.out
    rows = cli("models", "list", "--model-dir", str(store), "--json").json()["models"]
    assert [(r["name"], r["kind"]) for r in rows] == [("lamps", "detector")]


def test_a_bad_box_format_is_one_line(tmp_path: Path) -> None:
    graph = decoded_detector_graph(tmp_path / "t.onnx")
    run = cli("models", "import", str(graph), "--name", "x", "--kind", "detector",
              "--box-format", "ltrb", "--model-dir", str(tmp_path / "s"))  # fmt: skip
    assert run.code == 1 and "--box-format 'ltrb'" in run.err


def test_score_finds_the_lamp_in_the_bright_image_only(
    server: ServeProcess, photos: dict[str, Path]
) -> None:
    def score(name: str) -> dict[str, Any]:
        answer = httpx.post(
            f"{server.http_url}/score", content=photos[name].read_bytes(),
            headers={**AUTH, "Content-Type": "image/png"}, timeout=60,
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        doc: dict[str, Any] = answer.json()
        return doc

    bright = score("bright")
    assert bright["model"] == "lamps" and bright["imageSize"] == {"width": 80, "height": 48}
    (lamp,) = bright["detections"]
    assert lamp["label"] == "lamp" and lamp["class_id"] == 1 and lamp["score"] > 0.9
    assert lamp["box"] == pytest.approx(LAMP_BOX)
    assert score("dark")["detections"] == []


def test_open_inference_protocol_gives_the_same_detections(
    server: ServeProcess, photos: dict[str, Path]
) -> None:
    with triton.InferenceServerClient(f"127.0.0.1:{server.http_port}") as client:
        tensor = triton.InferInput("images", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([photos["bright"].read_bytes()], dtype=object))
        result = client.infer("lamps", [tensor], headers=dict(AUTH))
        tensors = {name: result.as_numpy(name) for name in det.DETECTION_OUTPUTS}
    (lamp,) = det.detections_from_tensors(tensors)
    assert (lamp.label, lamp.class_id) == ("lamp", 1)
    assert lamp.box == pytest.approx(tuple(LAMP_BOX.values()), abs=1e-5)
