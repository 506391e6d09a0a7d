"""The real face detector (MTCNN with its published weights) served by `edgefleet serve`:
POST /score (httpx), the Open Inference Protocol (tritonclient) and TF-Serving Predict (gRPC
stub) give the same detections; int8 and the FPGA emulator's BFP formats (fp32 rewritten at load)
find the same faces as fp32."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from modules.accelerators import detection as det
from modules.scoring.tfserving import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    tensor_pb2,
    types_pb2,
)
from tests.detector.conftest import ASTRONAUT_FACE
from tests.support.scoring import ServeProcess, serving

KEY = "detector-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _serve(store: Path, factory: pytest.TempPathFactory, precision: str) -> Iterator[ServeProcess]:
    with serving(
        store, factory.mktemp(f"serve-{precision}"), "--model", "face-detector",
        "--precision", precision, "--keys", KEY,
    ) as proc:  # fmt: skip
        yield proc


@pytest.fixture(scope="module")
def server(
    detector_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    yield from _serve(detector_store, tmp_path_factory, "fp32")


@pytest.fixture(scope="module")
def bfp8_server(
    detector_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """Served in bfp8: the three networks rewritten at load with the emulator's numerics."""
    yield from _serve(detector_store, tmp_path_factory, "bfp8")


def _score(server: ServeProcess, image: Path, precision: str = "fp32") -> list[det.Detection]:
    answer = httpx.post(
        f"{server.http_url}/score", content=image.read_bytes(),
        headers={**AUTH, "Content-Type": "image/jpeg"}, timeout=60,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["model"] == "face-detector" and doc["precision"] == precision
    assert (precision in doc["engine"]) == (precision != "fp32"), doc["engine"]
    return [
        det.Detection(
            (d["box"]["x"], d["box"]["y"], d["box"]["w"], d["box"]["h"]),
            d["score"],
            d["class_id"],
            d["label"],
        )  # fmt: skip
        for d in doc["detections"]
    ]


def _oip(server: ServeProcess, image: Path) -> list[det.Detection]:
    with triton.InferenceServerClient(f"127.0.0.1:{server.http_port}") as client:
        tensor = triton.InferInput("images", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([image.read_bytes()], dtype=object))
        result = client.infer("face-detector", [tensor], headers=dict(AUTH))
        tensors = {name: result.as_numpy(name) for name in det.DETECTION_OUTPUTS}
    assert all(t is not None for t in tensors.values())
    return det.detections_from_tensors(tensors)


def _predict(server: ServeProcess, image: Path) -> list[det.Detection]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.inputs["images"].CopyFrom(
            tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[image.read_bytes()])
        )
        response = stub.Predict(
            request, timeout=60, metadata=(("authorization", AUTH["Authorization"]),)
        )
    out = response.outputs
    assert set(out) == set(det.DETECTION_OUTPUTS)
    assert out["classes"].dtype == types_pb2.DT_INT32 and out["labels"].dtype == types_pb2.DT_STRING
    n = [d.size for d in out["boxes"].tensor_shape.dim][1]
    assert [d.size for d in out["boxes"].tensor_shape.dim] == [1, n, 4]
    return det.detections_from_tensors(
        {
            "boxes": np.frombuffer(out["boxes"].tensor_content, "<f4").reshape(1, n, 4),
            "scores": np.frombuffer(out["scores"].tensor_content, "<f4").reshape(1, n),
            "classes": np.frombuffer(out["classes"].tensor_content, "<i4").reshape(1, n),
            "labels": np.array(list(out["labels"].string_val), dtype=object).reshape(1, n),
        }
    )


def _same(a: list[det.Detection], b: list[det.Detection]) -> None:
    assert [(d.label, d.class_id) for d in a] == [(d.label, d.class_id) for d in b]
    for x, y in zip(a, b, strict=True):
        assert x.box == pytest.approx(y.box, abs=1e-5) and x.score == pytest.approx(
            y.score, abs=1e-5
        )


def test_the_face_in_the_astronaut_photo_is_found_through_every_protocol(
    server: ServeProcess, photos: dict[str, Path]
) -> None:
    scored = _score(server, photos["astronaut"])
    assert len(scored) == 1, scored
    (face,) = scored
    assert face.label == "face" and face.class_id == 0 and face.score > 0.95
    assert det.iou(face.box, ASTRONAUT_FACE) > 0.7
    _same(_oip(server, photos["astronaut"]), scored)
    _same(_predict(server, photos["astronaut"]), scored)

    image = base64.b64encode(photos["astronaut"].read_bytes()).decode()
    request = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [image]}]}
    answer = httpx.post(
        f"{server.http_url}/v2/models/face-detector/infer", json=request, headers=AUTH, timeout=60
    ).json()  # plain JSON tensors: BYTES as strings
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["labels"] == {
        "name": "labels",
        "datatype": "BYTES",
        "shape": [1, 1],
        "data": ["face"],
    }
    assert outputs["classes"]["datatype"] == "INT32" and outputs["classes"]["data"] == [0]
    assert outputs["boxes"]["shape"] == [1, 1, 4]
    assert outputs["boxes"]["data"] == pytest.approx(list(face.box), abs=1e-5)


@pytest.mark.parametrize("photo", ["coffee", "shapes"])
def test_no_face_is_found_where_there_is_none(
    server: ServeProcess, photos: dict[str, Path], photo: str
) -> None:
    assert _score(server, photos[photo]) == []
    assert _oip(server, photos[photo]) == []
    assert _predict(server, photos[photo]) == []


def test_metadata_describes_the_detection_tensors_and_tensors_are_refused(
    server: ServeProcess,
) -> None:
    with triton.InferenceServerClient(f"127.0.0.1:{server.http_port}") as client:
        meta = client.get_model_metadata("face-detector", headers=dict(AUTH))
        assert meta["inputs"] == [{"name": "images", "datatype": "BYTES", "shape": [1]}]
        assert meta["outputs"] == [
            {"name": "boxes", "datatype": "FP32", "shape": [1, -1, 4]},
            {"name": "scores", "datatype": "FP32", "shape": [1, -1]},
            {"name": "classes", "datatype": "INT32", "shape": [1, -1]},
            {"name": "labels", "datatype": "BYTES", "shape": [1, -1]},
        ]
        tensor = triton.InferInput("input", [1, 3, 48, 48], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 3, 48, 48), np.float32))
        with pytest.raises(triton.InferenceServerException, match="takes an encoded image"):
            client.infer("face-detector", [tensor], headers=dict(AUTH))
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        response = stub.GetModelMetadata(
            request, timeout=30, metadata=(("authorization", AUTH["Authorization"]),)
        )
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    outputs = signatures.signature_def["serving_default"].outputs
    assert outputs["labels"].dtype == types_pb2.DT_STRING
    assert [d.size for d in outputs["boxes"].tensor_shape.dim] == [1, -1, 4]


def test_bfp8_is_served_and_finds_the_astronauts_face_where_fp32_does(
    server: ServeProcess, bfp8_server: ServeProcess, photos: dict[str, Path]
) -> None:
    (face,) = _score(server, photos["astronaut"])
    found = _score(bfp8_server, photos["astronaut"], "bfp8")
    assert len(found) == 1, found
    assert found[0].score > 0.9 and det.iou(found[0].box, face.box) >= 0.5
    assert _score(bfp8_server, photos["coffee"], "bfp8") == []


@pytest.mark.parametrize("precision", ["int8", "bfp8", "msfp9"])
def test_quantized_finds_the_same_faces_as_fp32(detector_store: Path, precision: str) -> None:
    """Every fp32 face (astronaut; Lee's in the cameraman photo) has a box at IoU > 0.5 in the
    stored int8 and in the BFP formats rewritten at load; none where fp32 finds none."""
    from skimage import data

    from modules.accelerators.model_store import ModelStore
    from modules.accelerators.mtcnn import open_cascade

    store = ModelStore(detector_store)
    fp32, other = (open_cascade(store, "face-detector", p) for p in ("fp32", precision))
    for name in ("astronaut", "camera", "coffee", "chelsea"):
        rgb = np.asarray(getattr(data, name)())
        rgb = np.repeat(rgb[:, :, None], 3, axis=2) if rgb.ndim == 2 else rgb
        want, got = fp32.detect(rgb), other.detect(rgb)
        assert len(got) == len(want), (name, want, got)
        for face in want:
            assert max(det.iou(face.box, o.box) for o in got) > 0.5, (name, want, got)
    assert len(fp32.detect(np.asarray(data.astronaut()))) == 1
