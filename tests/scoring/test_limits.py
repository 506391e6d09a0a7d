"""The core's limits through every front end, in-process: a full pool answers 429 /
RESOURCE_EXHAUSTED, an image over the cap 413 / INVALID_ARGUMENT, bad tensors the reason."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from modules.scoring.core import Limits, ServingCore
from modules.scoring.keys import Keys
from modules.scoring.scorer import Scorer, ScoringConfig
from modules.scoring.server import Listen, Servers
from modules.scoring.tfserving import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from tests.scoring.conftest import CATS, ESPRESSO

KEY = "limits-key"
CAP = 300_000  # bytes; chelsea.jpg is below, a noise PNG of 600x600 far above
HEADERS = {"Authorization": f"Bearer {KEY}"}
GRPC_AUTH = (("authorization", f"Bearer {KEY}"),)


class GatedScorer:
    """The real scorer, whose ``run`` can be held at a gate to keep the pool full."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.name, self.labels = scorer.name, scorer.labels
        self.input_shape, self.feature_dim = scorer.input_shape, scorer.feature_dim
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def preprocess(self, image: bytes) -> np.ndarray:
        return self.scorer.preprocess(image)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.entered.set()
        assert self.gate.wait(60)
        return self.scorer.run(batch)

    def score(self, image: bytes) -> dict[str, object]:
        self.entered.set()
        assert self.gate.wait(60)
        return self.scorer.score(image)


@pytest.fixture(scope="module")
def scorer(model_dir: Path) -> Iterator[Scorer]:
    scorer = Scorer(ScoringConfig(model_dir=str(model_dir)))
    yield scorer
    scorer.close()


def _gated_servers(scorer: Scorer) -> tuple[GatedScorer, Servers]:
    model = GatedScorer(scorer)
    core = ServingCore(model, Keys([KEY]), Limits(workers=1, queue=0, max_image_bytes=CAP))
    return model, Servers(core, Listen(grpc_port=0, http_port=0))


@pytest.fixture(scope="module")
def gated(scorer: Scorer) -> Iterator[tuple[GatedScorer, Servers]]:
    model, servers = _gated_servers(scorer)
    yield model, servers
    servers.stop()


@pytest.fixture(scope="module")
def stub(
    gated: tuple[GatedScorer, Servers],
) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{gated[1].grpc_port}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _image_request(image: bytes, name: str = "images") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    tensor = request.inputs[name]
    tensor.dtype = types_pb2.DT_STRING
    tensor.tensor_shape.dim.add(size=1)
    tensor.string_val.append(image)
    return request


def _v2_image(image: bytes) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "images",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(image).decode()],
            }
        ],
        "outputs": [{"name": "scores"}],
    }


def test_a_full_pool_answers_429_and_resource_exhausted(
    gated: tuple[GatedScorer, Servers],
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
    photos: dict[str, Path],
) -> None:
    model, servers = gated
    jpeg = photos["chelsea.jpg"].read_bytes()
    http = f"http://127.0.0.1:{servers.http_port}"
    score_headers = {**HEADERS, "Content-Type": "image/jpeg"}
    model.gate.clear()
    model.entered.clear()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            httpx.post, f"{http}/score", content=jpeg, headers=score_headers, timeout=60
        )
        assert model.entered.wait(30)  # the only worker is busy and the queue is 0
        busy = httpx.post(f"{http}/score", content=jpeg, headers=score_headers, timeout=30)
        assert busy.status_code == 429 and "busy" in busy.json()["message"]
        v2 = httpx.post(
            f"{http}/v2/models/efficientnet-lite0/infer", json=_v2_image(jpeg), headers=HEADERS
        )
        assert v2.status_code == 429 and "busy" in v2.json()["error"]
        with pytest.raises(grpc.RpcError) as exhausted:
            stub.Predict(_image_request(jpeg), timeout=30, metadata=GRPC_AUTH)
        assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        model.gate.set()
        assert first.result(60).status_code == 200
    # the pool is free again
    again = httpx.post(f"{http}/score", content=jpeg, headers=score_headers, timeout=60)
    assert again.status_code == 200 and again.json()["top5"][0]["class_id"] in CATS


def test_images_over_the_cap_are_refused_with_the_limit(
    gated: tuple[GatedScorer, Servers],
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    import cv2

    noise = np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", noise)
    huge = encoded.tobytes()
    assert ok and len(huge) > CAP
    http = f"http://127.0.0.1:{gated[1].http_port}"
    score = httpx.post(
        f"{http}/score", content=huge, headers={**HEADERS, "Content-Type": "image/png"}
    )
    assert score.status_code == 413 and str(CAP) in score.json()["message"]
    v2 = httpx.post(
        f"{http}/v2/models/efficientnet-lite0/infer", json=_v2_image(huge), headers=HEADERS
    )
    assert v2.status_code == 413 and str(CAP) in v2.json()["error"]
    with pytest.raises(grpc.RpcError) as refused:
        stub.Predict(_image_request(huge), timeout=30, metadata=GRPC_AUTH)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(CAP) in (refused.value.details() or "")


def _invalid(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, request: predict_pb2.PredictRequest
) -> str:
    with pytest.raises(grpc.RpcError) as refused:
        stub.Predict(request, timeout=30, metadata=GRPC_AUTH)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
    return refused.value.details() or ""


def test_grpc_bad_inputs_are_invalid_argument_with_the_reason(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, photos: dict[str, Path]
) -> None:
    jpeg = photos["chelsea.jpg"].read_bytes()
    assert "decodable" in _invalid(stub, _image_request(jpeg[: len(jpeg) // 2]))
    assert "decodable" in _invalid(stub, _image_request(b"GIF89a, but not really"))
    two = _image_request(jpeg)
    two.inputs["images"].tensor_shape.dim[0].size = 2
    two.inputs["images"].string_val.append(jpeg)
    assert "shape [1]" in _invalid(stub, two)
    ints = predict_pb2.PredictRequest()
    ints.inputs["images"].dtype = types_pb2.DT_INT32
    ints.inputs["images"].int_val.extend([1, 2, 3])
    assert "DT_INT32" in _invalid(stub, ints)
    flat = predict_pb2.PredictRequest()
    flat.inputs["x"].dtype = types_pb2.DT_FLOAT
    flat.inputs["x"].tensor_shape.dim.add(size=10)
    flat.inputs["x"].float_val.extend([0.0] * 10)
    assert "shape" in _invalid(stub, flat)
    unknown = _image_request(jpeg)
    unknown.output_filter.append("logits")
    assert "unknown output 'logits'" in _invalid(stub, unknown)
    assert "one input" in _invalid(stub, predict_pb2.PredictRequest())


def test_grpc_output_filter_and_float_tensor_input(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
    photos: dict[str, Path],
    model_dir: Path,
) -> None:
    from modules.accelerators.model_store import ModelStore
    from modules.accelerators.preprocess import preprocess

    request = _image_request(photos["coffee.jpg"].read_bytes(), name="any-name")
    request.output_filter.extend(["features", "scores"])
    response = stub.Predict(request, timeout=30, metadata=GRPC_AUTH)
    assert set(response.outputs) == {"features", "scores"}
    scores = response.outputs["scores"]
    assert [d.size for d in scores.tensor_shape.dim] == [1, 1000]
    assert scores.dtype == types_pb2.DT_FLOAT
    probs = np.frombuffer(scores.tensor_content, dtype="<f4")
    assert int(probs.argmax()) == ESPRESSO
    assert [d.size for d in response.outputs["features"].tensor_shape.dim] == [1, 1280]
    assert response.model_spec.name == "efficientnet-lite0"

    batch = preprocess(
        photos["coffee.jpg"], ModelStore(model_dir).get("efficientnet-lite0").preprocessing
    )
    nhwc = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in nhwc.shape]
        ),
        tensor_content=nhwc.astype("<f4").tobytes(),
    )
    as_tensor = predict_pb2.PredictRequest()
    as_tensor.inputs["input"].CopyFrom(tensor)
    (only,) = stub.Predict(as_tensor, timeout=30, metadata=GRPC_AUTH).outputs.items()
    assert only[0] == "scores"
    assert int(np.frombuffer(only[1].tensor_content, dtype="<f4").argmax()) == ESPRESSO


def test_grpc_metadata_needs_the_signature_def_field(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetModelMetadata(
            get_model_metadata_pb2.GetModelMetadataRequest(), timeout=30, metadata=GRPC_AUTH
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    other = _image_request(b"x")
    other.model_spec.name = "resnet50"
    with pytest.raises(grpc.RpcError) as missing:
        stub.Predict(other, timeout=30, metadata=GRPC_AUTH)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_http_bad_bodies_are_4xx_json(gated: tuple[GatedScorer, Servers]) -> None:
    http = f"http://127.0.0.1:{gated[1].http_port}"
    infer = f"{http}/v2/models/efficientnet-lite0/infer"
    cases = [
        (b"{not json", "$: the inference header is not JSON"),
        (json.dumps({"inputs": []}).encode(), "$.inputs"),
        (
            json.dumps(
                {"inputs": [{"name": "i", "datatype": "FP32", "shape": [1, 2], "data": [1]}]}
            ).encode(),
            "$.inputs[0].data",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "i", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}
            ).encode(),
            "not base64",
        ),
    ]
    for body, reason in cases:
        answer = httpx.post(infer, content=body, headers=HEADERS)
        assert answer.status_code == 400 and reason in answer.json()["error"], answer.text
    lying = httpx.post(
        infer, content=b"{}", headers={**HEADERS, "Inference-Header-Content-Length": "99"}
    )
    assert lying.status_code == 400 and "Inference-Header-Content-Length" in lying.json()["error"]
    assert httpx.get(f"{http}/v2/models/other", headers=HEADERS).status_code == 404
    assert httpx.get(infer, headers=HEADERS).status_code == 405
    assert httpx.post(f"{http}/v2/models/efficientnet-lite0", headers=HEADERS).status_code == 400
    assert (
        httpx.get(f"{http}/v2/models/efficientnet-lite0/versions/7", headers=HEADERS).status_code
        == 404
    )
    score_json = httpx.post(f"{http}/score", json={"picture": "x"}, headers=HEADERS)
    assert score_json.status_code == 400 and "$.image" in score_json.json()["message"]


def test_stopping_refuses_new_calls_and_lets_admitted_ones_finish(
    scorer: Scorer, photos: dict[str, Path]
) -> None:
    model, servers = _gated_servers(scorer)
    url = f"http://127.0.0.1:{servers.http_port}/score"
    jpeg = photos["chelsea.jpg"].read_bytes()
    headers = {**HEADERS, "Content-Type": "image/jpeg"}
    model.gate.clear()
    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(httpx.post, url, content=jpeg, headers=headers, timeout=60)
        assert model.entered.wait(30)
        stopping = pool.submit(servers.stop)
        for _ in range(300):
            if not servers.core.ready.is_set():
                break
            threading.Event().wait(0.1)
        late = httpx.post(url, content=jpeg, headers=headers, timeout=30)
        assert late.status_code == 429 and "shutting down" in late.json()["message"]
        model.gate.set()
        assert held.result(60).status_code == 200  # finished before the ports closed
        stopping.result(60)
    with pytest.raises(httpx.ConnectError):
        httpx.post(url, content=jpeg, headers=headers, timeout=5)
