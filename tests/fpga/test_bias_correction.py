"""Bias correction: stored calibration means make quantized convs unbiased (BFP rewrite, int8)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from modules.accelerators.bfp import quantize_conv_weight
from modules.accelerators.bias_correction import (
    conv_input_means,
    correct_conv_biases,
    embed_means,
    int8_per_channel,
    read_means,
)
from modules.accelerators.fpga.rewrite import rewrite


def _two_convs(rng: np.random.Generator) -> onnx.ModelProto:
    """A depthwise 3x3 conv (kernels summing to nearly zero, as edge detectors do) then a 1x1."""
    dw = rng.normal(0, 1, (8, 1, 3, 3)).astype(np.float32)
    dw -= dw.mean(axis=(2, 3), keepdims=True) * 0.98
    pw = rng.normal(0, 0.5, (16, 8, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "dw", "db"], ["h"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "pw", "pb"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16, 12, 12])],
        [
            numpy_helper.from_array(dw, "dw"),
            numpy_helper.from_array(np.zeros(8, np.float32), "db"),
            numpy_helper.from_array(pw, "pw"),
            numpy_helper.from_array(np.zeros(16, np.float32), "pb"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    means = np.linspace(-3.0, 5.0, 8, dtype=np.float32)[None, :, None, None]
    return (means + rng.normal(0, 0.3, (n, 8, 12, 12))).astype(np.float32)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0])


def test_means_round_trip_through_the_model_metadata() -> None:
    rng = np.random.default_rng(0)
    model = _two_convs(rng)
    x = _inputs(rng, 16)
    means = conv_input_means(model, [{"x": x[:8]}, {"x": x[8:]}])
    assert set(means) == {"x", "r"}
    np.testing.assert_allclose(means["x"], x.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-5)
    assert read_means(model) is None
    embed_means(model, means)
    embed_means(model, means)  # replaces, does not duplicate
    assert sum(p.key.startswith("edgefleet.") for p in model.metadata_props) == 1
    back = read_means(model)
    assert back is not None
    np.testing.assert_allclose(back["r"], means["r"], rtol=1e-5)


def test_bfp_rewrite_with_stored_means_removes_the_mean_output_shift() -> None:
    rng = np.random.default_rng(1)
    model = _two_convs(rng)
    calib, held_out = _inputs(rng, 16), _inputs(rng, 16)  # the means come from other inputs
    embed_means(model, conv_input_means(model, [{"x": calib}]))
    reference = _run(model, held_out)
    plain, report_plain = rewrite(model, "msfp9", bias_correction=False)
    fixed, report = rewrite(model, "msfp9")
    assert (report_plain.bias_corrected, report.bias_corrected) == (0, 2)

    def shift(m: onnx.ModelProto) -> float:
        return float(np.abs((_run(m, held_out) - reference).mean(axis=(0, 2, 3))).mean())

    assert shift(fixed) < 0.25 * shift(plain), (shift(fixed), shift(plain))
    err_plain = np.linalg.norm(_run(plain, held_out) - reference)
    assert np.linalg.norm(_run(fixed, held_out) - reference) < err_plain


def test_correction_is_the_weight_error_times_the_input_means() -> None:
    rng = np.random.default_rng(2)
    model = _two_convs(rng)
    means = {"x": np.arange(8, dtype=np.float32) - 2.0, "r": np.ones(8, np.float32)}
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert correct_conv_biases(model, means, int8_per_channel) == 2
    after = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dw_err = (int8_per_channel(weights["dw"]) - weights["dw"]).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(after["db"], -dw_err * means["x"], rtol=1e-4, atol=1e-7)
    pw_err = (int8_per_channel(weights["pw"]) - weights["pw"]).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(after["pb"], -pw_err, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(after["dw"], weights["dw"])  # weights untouched


def test_int8_helper_matches_symmetric_per_channel_rounding() -> None:
    w = np.array([[[[1.0, -0.5, 0.25]]], [[[0.0, 0.0, 0.0]]]], np.float32)
    q = int8_per_channel(w)
    np.testing.assert_allclose(q[0], np.rint(w[0] * 127) / 127, rtol=1e-6)
    np.testing.assert_array_equal(q[1], 0)
    assert np.abs(quantize_conv_weight(w, "bfp8") - w).max() <= 1 / 128
