"""``edgefleet models package`` of a detector: the files the image ships (each network of the
face detector's cascade in one precision, no head), the one-line refusals, and the built image
answering ``POST /score`` with the boxes ``edgefleet serve`` gives on the host (real dockerd, the
cached base and runtime images)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modules.accelerators.model_store import ModelStore
from modules.camera.frames import jpeg_frame
from modules.packaging.context import ImageSpec, copy_model
from tests.byom.cli import import_detector
from tests.byom.models import decoded_detector_graph
from tests.detector.conftest import ASTRONAUT_FACE, detector_store
from tests.packaging.test_package_e2e import edgefleet
from tests.support.docker import TEST_LABEL, docker_client
from tests.support.mqtt import wait_until
from tests.support.scoring import serving

KEY = "pkg-detector-key"
__all__ = ["detector_store"]  # the cached face detector store (fp32, int8), a fixture

AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "image/jpeg"}


def test_a_detector_ships_each_network_of_its_precision_and_no_head(
    detector_store: Path, tmp_path: Path
) -> None:
    store = ModelStore(detector_store)
    full = store.get("face-detector")
    manifest = copy_model(store, ImageSpec("face-detector", "", "int8"), tmp_path / "models")
    assert set(manifest.stages) == {"pnet", "rnet", "onet"} and manifest.heads == {}
    assert all(set(variants) == {"int8"} for variants in manifest.stages.values())
    wanted = {Path(full.stages[s]["int8"].file).name for s in ("pnet", "rnet", "onet")}
    assert {p.name for p in (tmp_path / "models" / "blobs").iterdir()} == wanted
    shipped = ModelStore(tmp_path / "models").get("face-detector")
    assert shipped.kind == "detector" and shipped.precisions == ["int8"]
    assert shipped.detector == full.detector


def test_an_imported_detector_ships_its_one_network(tmp_path: Path) -> None:
    graph = decoded_detector_graph(tmp_path / "tiny.onnx")
    found = import_detector(graph, "lamps", ["background", "lamp"], tmp_path / "store",
                            "--box-format", "yxyx", "--box-units", "normalized")  # fmt: skip
    assert found.code == 0, found.err
    store = ModelStore(tmp_path / "store")
    manifest = copy_model(store, ImageSpec("lamps", "", "fp32"), tmp_path / "models")
    assert manifest.heads == {} and manifest.precisions == ["fp32"]
    blobs = [p.name for p in (tmp_path / "models" / "blobs").iterdir()]
    assert blobs == [Path(store.get("lamps").featurizer["fp32"].file).name]
    shipped = ModelStore(tmp_path / "models").get("lamps")
    assert shipped.detector is not None and shipped.detector.labels == ["background", "lamp"]
    assert shipped.detector.box_format == "yxyx"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--head", "default"), "face-detector is a detector: --head is for classifiers"),
        (("--precision", "fp16"), "'face-detector' has no fp16 featurizer (available: fp32, int8)"),
    ],
)
def test_options_that_do_not_fit_a_detector_are_one_line_errors(
    detector_store: Path, args: tuple[str, ...], message: str
) -> None:
    done = edgefleet("models", "package", "--model", "face-detector", "--model-dir",
                     str(detector_store), "--image", "127.0.0.1:1/x:1", *args)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and message in done.stderr, done.stderr


def _boxes(answer: httpx.Response) -> list[tuple[Any, ...]]:
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["model"] == "face-detector" and doc["precision"] == "fp32"
    return [(d["label"], d["class_id"], d["score"], *d["box"].values()) for d in doc["detections"]]


@pytest.fixture(scope="module")
def container_url(detector_store: Path) -> Iterator[str]:
    """The face detector packaged (fp32) and run with a key, its HTTP port on a free one."""
    image = f"ef-facedet-{uuid.uuid4().hex[:8]}:1"
    done = edgefleet("models", "package", "--model", "face-detector", "--model-dir",
                     str(detector_store), "--image", image, "--cpu-only", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert (result["model"], result["head"], result["precision"]) == ("face-detector", "", "fp32")
    client = docker_client()
    container = None
    try:
        container = client.containers.run(
            image, detach=True, environment={"SCORING_PRIMARY_KEY": KEY},
            ports={"5001/tcp": ("127.0.0.1", None)}, labels={TEST_LABEL: "1"},
        )  # fmt: skip
        container.reload()
        url = f"http://127.0.0.1:{container.ports['5001/tcp'][0]['HostPort']}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(up, timeout=90), container.logs()[-3000:].decode(errors="replace")
        yield url
    finally:
        if container is not None:
            container.remove(force=True)
        client.api.remove_image(image, force=True)
        client.close()


def test_the_packaged_detector_finds_the_boxes_serve_finds(
    container_url: str,
    detector_store: Path,
    tmp_path: Path,
) -> None:
    body = jpeg_frame("astronaut")
    packaged = _boxes(httpx.post(f"{container_url}/score", content=body, headers=AUTH, timeout=60))
    assert httpx.post(f"{container_url}/score", content=body, timeout=60).status_code == 401
    with serving(detector_store, tmp_path, "--model", "face-detector", "--keys", KEY) as server:
        served = _boxes(httpx.post(f"{server.http_url}/score", content=body, headers=AUTH))
    assert len(packaged) == len(served) >= 1
    for got, want in zip(packaged, served, strict=True):
        assert got[:2] == want[:2] == ("face", 0)
        assert got[2:] == pytest.approx(want[2:], abs=1e-3)
    assert packaged[0][3:] == pytest.approx(ASTRONAUT_FACE, abs=0.03)
    # the Open Inference Protocol (plain JSON) gives the same detections as /score
    request = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                           "data": [base64.b64encode(body).decode()]}]}  # fmt: skip
    answer = httpx.post(f"{container_url}/v2/models/face-detector/infer", json=request,
                        headers={"Authorization": AUTH["Authorization"]}, timeout=60)  # fmt: skip
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["labels"]["data"] == [d[0] for d in packaged]
    assert outputs["boxes"]["shape"] == [1, len(packaged), 4]
    assert outputs["boxes"]["data"] == pytest.approx([v for d in packaged for v in d[3:]], abs=1e-5)
