"""Imported models behind `edgefleet serve`: Predict (TF-Serving gRPC stub), POST /score (httpx)
and the Open Inference Protocol (tritonclient), with the model's own labels and preprocessing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

from modules.scoring.tfserving import (
    predict_pb2,
    prediction_service_pb2_grpc,
    tensor_pb2,
    types_pb2,
)
from tests.byom.cli import cli
from tests.byom.conftest import COLORS, LABELS
from tests.support.scoring import ServeProcess, serving

MODELS = {
    # store ref -> (model file key, labels, mean, std, NHWC?, graph ends in softmax?)
    "shapes:1": ("cnn", LABELS, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False, False),
    "colors": ("nhwc", COLORS, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), True, True),
}


@pytest.fixture(scope="module")
def store(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    for args in (
        [str(files["cnn"]), "--name", "shapes", "--labels", str(files["labels"])],
        [str(files["cnn"]), "--name", "shapes", "--version", "2"],  # no labels: served is :1
        [str(files["nhwc"]), "--name", "colors"],
    ):
        assert cli("models", "import", *args, "--model-dir", str(root)).code == 0
    return root


@pytest.fixture(scope="module", params=sorted(MODELS))
def served(
    request: pytest.FixtureRequest, store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ServeProcess]]:
    with serving(store, tmp_path_factory.mktemp("serve"), "--model", request.param) as proc:
        yield request.param, proc


def expected_scores(ref: str, files: dict[str, Path], image: Path) -> np.ndarray:
    """The model file run directly on the documented preprocessing: short side to
    round(size / 0.875) (area when shrinking), centre crop, (x / 255 - mean) / std."""
    key, _labels, mean, std, nhwc, softmaxed = MODELS[ref]
    bgr = cv2.imread(str(image))
    assert bgr is not None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    short = round(32 / 0.875)
    size = (round(w * short / h), short) if h <= w else (short, round(h * short / w))
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    top, left = (rgb.shape[0] - 32) // 2, (rgb.shape[1] - 32) // 2
    x = (rgb[top : top + 32, left : left + 32].astype(np.float32) / 255 - mean) / std
    x = x[None] if nhwc else x.transpose(2, 0, 1)[None]
    sess = ort.InferenceSession(str(files[key]), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0][0]
    if not softmaxed:
        out = np.exp(out - out.max()) / np.exp(out - out.max()).sum()
    return out


def test_every_protocol_answers_with_the_models_labels_and_preprocessing(
    served: tuple[str, ServeProcess], files: dict[str, Path]
) -> None:
    ref, server = served
    name = ref.split(":")[0]
    labels = MODELS[ref][1]
    image = files["images"] / "03.png"
    want = expected_scores(ref, files, image)

    score = httpx.post(
        f"{server.http_url}/score", content=image.read_bytes(),
        headers={"Content-Type": "image/png"}, timeout=30,
    ).json()  # fmt: skip
    top = score["top5"]
    assert [t["label"] for t in top] == [labels[i] for i in np.argsort(-want, kind="stable")]
    assert top[0]["score"] == pytest.approx(float(want.max()), abs=1e-4)

    with triton.InferenceServerClient(f"127.0.0.1:{server.http_port}") as client:
        meta = client.get_model_metadata(name)
        assert {"name": "scores", "datatype": "FP32", "shape": [1, len(labels)]} in meta["outputs"]
        tensor = triton.InferInput("images", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([image.read_bytes()], dtype=object))
        scores = client.infer(name, [tensor]).as_numpy("scores")
    assert scores is not None
    np.testing.assert_allclose(scores[0], want, atol=1e-4)

    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.inputs["images"].CopyFrom(
            tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[image.read_bytes()])
        )
        response = stub.Predict(request, timeout=30)
    out = response.outputs["scores"]
    assert [d.size for d in out.tensor_shape.dim] == [1, len(labels)]
    np.testing.assert_allclose(np.frombuffer(out.tensor_content, "<f4"), want, atol=1e-4)


def _gray_graph(path: Path) -> Path:
    """A 1-channel NCHW classifier: GlobalAveragePool -> Flatten -> Gemm to 2 classes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["gray"], ["gap"]),
            helper.make_node("Flatten", ["gap"], ["flat"]),
            helper.make_node("Gemm", ["flat", "w"], ["logits"]),
        ],
        "gray",
        [helper.make_tensor_value_info("gray", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(np.array([[1.0, -1.0]], np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_gray_model_gets_luma_images_and_one_channel_tensors(tmp_path: Path) -> None:
    """Class 0 when the mean normalized luma is positive (bright), class 1 when dark."""
    from modules.scoring.core import ServingCore
    from modules.scoring.keys import Keys
    from modules.scoring.scorer import Scorer, ScoringConfig

    store = str(tmp_path / "store")
    run = cli("models", "import", str(_gray_graph(tmp_path / "g.onnx")), "--name", "gray",
              "--mean", "0.5", "--std", "0.25", "--model-dir", store)  # fmt: skip
    assert run.code == 0, run.err
    scorer = Scorer(ScoringConfig(model="gray", model_dir=store))
    core = ServingCore(scorer, Keys.parse(None))
    assert scorer.input_shape == (1, 28, 28)
    for value, expected in ((230, 0), (20, 1)):
        image = cv2.imencode(".png", np.full((40, 50, 3), value, np.uint8))[1].tobytes()
        assert int(core.infer_image(image)["scores"].argmax()) == expected
    assert int(core.infer_tensor(np.full((1, 28, 28, 1), -1, np.float32))["scores"].argmax()) == 1
