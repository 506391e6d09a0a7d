"""Open Inference Protocol (KServe v2): the real tritonclient[http] against edgefleet serve."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.scoring.conftest import CATS, ESPRESSO, KEYS
from tests.support.scoring import ServeProcess

MODEL = "efficientnet-lite0"


def auth() -> dict[str, str]:
    """A new dict each call: tritonclient adds Inference-Header-Content-Length to the one given."""
    return {"Authorization": f"Bearer {KEYS[1]}"}


@pytest.fixture(scope="module")
def client(server: ServeProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(f"127.0.0.1:{server.http_port}") as c:
        yield c


def _image_input(path: Path, name: str = "images") -> triton.InferInput:
    tensor = triton.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([path.read_bytes()], dtype=object), binary_data=True)
    return tensor


def test_health_metadata_and_readiness_routes(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL, headers=auth())
    assert client.is_model_ready(MODEL, "1", headers=auth())
    server = client.get_server_metadata(headers=auth())
    assert server["name"] == "edgefleet" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata(MODEL, headers=auth())
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert {"name": "images", "datatype": "BYTES", "shape": [1]} in meta["inputs"]
    assert {"name": "scores", "datatype": "FP32", "shape": [1, 1000]} in meta["outputs"]
    assert not client.is_model_ready("no-such-model", headers=auth())


def test_bytes_image_with_binary_outputs(
    client: triton.InferenceServerClient, photos: dict[str, Path]
) -> None:
    result = client.infer(MODEL, [_image_input(photos["chelsea.jpg"])], headers=auth())
    scores = result.as_numpy("scores")
    assert scores is not None and scores.shape == (1, 1000) and scores.dtype == np.float32
    assert int(scores[0].argmax()) in CATS
    features = result.as_numpy("features")
    assert features is not None and features.shape == (1, 1280)
    # tritonclient asked for binary outputs (its default): they came as binary_data_size
    outputs = result.get_response()["outputs"]
    assert all("binary_data_size" in o["parameters"] for o in outputs)


def test_bytes_image_with_json_output_and_any_input_name(
    client: triton.InferenceServerClient, photos: dict[str, Path]
) -> None:
    wanted = [triton.InferRequestedOutput("scores", binary_data=False)]
    result = client.infer(
        MODEL, [_image_input(photos["coffee.png"], "picture")], outputs=wanted, headers=auth()
    )
    (output,) = result.get_response()["outputs"]
    assert output["name"] == "scores" and output["shape"] == [1, 1000]
    assert len(output["data"]) == 1000  # JSON data, not binary
    scores = result.as_numpy("scores")
    assert scores is not None and int(scores[0].argmax()) == ESPRESSO


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_fp32_tensor_input(
    client: triton.InferenceServerClient, photos: dict[str, Path], model_dir: Path, layout: str
) -> None:
    from modules.accelerators.model_store import ModelStore
    from modules.accelerators.preprocess import preprocess

    batch = preprocess(photos["coffee.jpg"], ModelStore(model_dir).get(MODEL).preprocessing)
    if layout == "NHWC":
        batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
    for binary in (True, False):
        tensor = triton.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        wanted = [triton.InferRequestedOutput("scores", binary_data=binary)]
        result = client.infer(MODEL, [tensor], outputs=wanted, headers=auth())
        scores = result.as_numpy("scores")
        assert scores is not None and int(scores[0].argmax()) == ESPRESSO


def test_wrong_or_missing_key_is_401(
    client: triton.InferenceServerClient, photos: dict[str, Path]
) -> None:
    for headers in ({"Authorization": "Bearer nope"}, {}):
        with pytest.raises(InferenceServerException) as refused:
            client.infer(MODEL, [_image_input(photos["chelsea.jpg"])], headers=headers)
        assert refused.value.status() == "401"
        with pytest.raises(InferenceServerException) as meta:
            client.get_model_metadata(MODEL, headers=headers)
        assert meta.value.status() == "401"
    # the same connection still works with the right key
    assert client.infer(MODEL, [_image_input(photos["chelsea.jpg"])], headers=auth())


def test_bad_inputs_are_400_with_the_reason(
    client: triton.InferenceServerClient, photos: dict[str, Path]
) -> None:
    def refused(inputs: list[triton.InferInput]) -> str:
        with pytest.raises(InferenceServerException) as exc:
            client.infer(MODEL, inputs, headers=auth())
        assert exc.value.status() == "400", exc.value
        return str(exc.value.message())

    jpeg = photos["chelsea.jpg"].read_bytes()
    truncated = triton.InferInput("images", [1], "BYTES")
    truncated.set_data_from_numpy(np.array([jpeg[: len(jpeg) // 3]], dtype=object))
    assert "decodable" in refused([truncated])
    garbage = triton.InferInput("images", [1], "BYTES")
    garbage.set_data_from_numpy(np.array([b"this is not an image"], dtype=object))
    assert "decodable" in refused([garbage])
    ints = triton.InferInput("input", [1, 3, 224, 224], "INT32")
    ints.set_data_from_numpy(np.zeros((1, 3, 224, 224), dtype=np.int32))
    assert "datatype" in refused([ints])
    wrong_shape = triton.InferInput("input", [1, 3, 100, 100], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 3, 100, 100), dtype=np.float32))
    assert "shape" in refused([wrong_shape])
    two = triton.InferInput("images", [2], "BYTES")
    two.set_data_from_numpy(np.array([jpeg, jpeg], dtype=object))
    assert "one element" in refused([two])
