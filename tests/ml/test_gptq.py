"""GPTQ rounding onto onnxruntime's int8 grid: same grid, smaller output error than rounding."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from modules.accelerators.bias_correction import int8_per_channel
from modules.featurizer.gptq import gptq_int8_weights


def _model(rng: np.random.Generator) -> onnx.ModelProto:
    """A 3x3 conv over correlated channels, a depthwise 3x3, a 1x1."""
    w1 = rng.normal(0, 0.3, (12, 6, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 1.0, (12, 1, 3, 3)).astype(np.float32)
    w3 = rng.normal(0, 0.3, (8, 12, 1, 1)).astype(np.float32)
    zeros = {n: np.zeros(c, np.float32) for n, c in (("b1", 12), ("b2", 12), ("b3", 8))}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["h2"], group=12, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["h2", "w3", "b3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 10, 10])],
        [numpy_helper.from_array(w, n) for n, w in (("w1", w1), ("w2", w2), ("w3", w3))]
        + [numpy_helper.from_array(b, n) for n, b in zeros.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    base = rng.normal(0, 1, (n, 1, 10, 10))
    mix = rng.normal(0, 0.2, (n, 6, 10, 10))
    return (base + mix + np.linspace(-1, 1, 6)[None, :, None, None]).astype(np.float32)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0])


def _with(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name in weights:
            init.CopyFrom(numpy_helper.from_array(weights[init.name], init.name))
    return out


def test_gptq_weights_lie_on_the_int8_grid_and_cut_the_output_error() -> None:
    rng = np.random.default_rng(0)
    model = _model(rng)
    calib, held_out = _inputs(rng, 16), _inputs(rng, 16)
    rounded = gptq_int8_weights(model, "x", calib)
    assert set(rounded) == {"w1", "w2", "w3"}
    originals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nearest = {name: int8_per_channel(originals[name]) for name in rounded}
    for name, weight in rounded.items():
        # onnxruntime's quantizer recomputes the same per-channel scale and keeps these codes
        np.testing.assert_allclose(int8_per_channel(weight), weight, rtol=1e-6, atol=0)
        step = np.abs(originals[name]).reshape(len(weight), -1).max(axis=1) / 127
        codes = weight.reshape(len(weight), -1) / step[:, None]
        np.testing.assert_allclose(codes, np.rint(codes), atol=1e-3)
        assert np.abs(codes).max() <= 127 + 1e-3
    reference = _run(model, held_out)
    err_gptq = np.linalg.norm(_run(_with(model, rounded), held_out) - reference)
    err_nearest = np.linalg.norm(_run(_with(model, nearest), held_out) - reference)
    assert err_gptq < 0.9 * err_nearest, (err_gptq, err_nearest)
