"""The BFP graph rewrite computes exactly what the numpy reference computes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from modules.accelerators.bfp import (
    FORMATS,
    get_format,
    quantize,
    quantize_conv_input,
    quantize_conv_weight,
    quantize_matmul_weight,
)
from modules.accelerators.fpga.rewrite import rewrite

FMTS = sorted(FORMATS)


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    inits: dict[str, np.ndarray],
    opset: int = 18,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, **feeds: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, feeds)[0])


def _activations(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random data with the awkward cases: exact powers of two, zero blocks, huge spread."""
    x = rng.standard_normal(shape).astype(np.float32) * rng.choice([1e-3, 1.0, 50.0], size=shape)
    x.flat[::7] = np.float32(2.0) ** rng.integers(-8, 8, size=x.flat[::7].shape)
    x.flat[5:40] = 0.0
    return x.astype(np.float32)


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("channels", [3, 24, 40, 64])
def test_conv_activation_quantizer_is_bit_exact(fmt: str, channels: int) -> None:
    # A 1x1 conv with the identity weight returns its (quantized) input unchanged.
    eye = np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, 5, 6])
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"])], [x_info], {"w": eye})
    q, report = rewrite(model, fmt)
    assert report.quantized_nodes == 1 and not report.skipped
    x = _activations(np.random.default_rng(channels), (2, channels, 5, 6))
    np.testing.assert_array_equal(_run(q, x=x), quantize(x, fmt, axis=1))


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("width", [7, 16, 40, 56])
def test_depthwise_activation_is_blocked_within_each_channel(fmt: str, width: int) -> None:
    # A depthwise 1x1 conv with unit weights returns its quantized input: each channel's plane is
    # one block, so a quiet channel keeps its bits next to a loud one.
    channels = 24
    ones = np.ones((channels, 1, 1, 1), np.float32)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, 5, width])
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=channels)
    q, report = rewrite(_model([node], [x_info], {"w": ones}), fmt)
    assert report.quantized_nodes == 1 and not report.skipped
    x = _activations(np.random.default_rng(width), (2, channels, 5, width))
    x[:, 0] *= np.float32(1e6)  # one loud channel must not flush its neighbours
    y = _run(q, x=x)
    np.testing.assert_array_equal(y, quantize_conv_input(x, fmt, depthwise=True))
    per_plane = get_format(fmt, block_size=5 * width)  # one shared exponent per channel plane
    planes = quantize(x.reshape(2, channels, -1), per_plane, axis=-1).reshape(x.shape)
    np.testing.assert_array_equal(y, planes)
    alone = _run(q, x=np.concatenate([np.zeros_like(x[:, :1]), x[:, 1:]], axis=1))
    np.testing.assert_array_equal(y[:, 1:], alone[:, 1:])
    even = np.random.default_rng(0).uniform(0.5, 1.0, x.shape).astype(np.float32)
    even[:, 0] *= np.float32(1e6)
    assert np.count_nonzero(_run(q, x=even)) == even.size
    across = quantize(even, fmt, axis=1)  # the wrong, cross-channel blocking flushes them
    assert not np.any(across[:, 1:8])


@pytest.mark.parametrize("fmt", FMTS)
def test_matmul_activation_quantizer_is_bit_exact(fmt: str) -> None:
    k = 72
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", k])
    model = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [x_info],
        {"w": np.eye(k, dtype=np.float32)},
    )
    q, _ = rewrite(model, fmt)
    x = _activations(np.random.default_rng(1), (3, k))
    np.testing.assert_array_equal(_run(q, x=x), quantize(x, fmt, axis=-1))


@pytest.mark.parametrize("fmt", FMTS)
def test_conv_relu_conv_matches_layerwise_reference(fmt: str) -> None:
    rng = np.random.default_rng(7)
    w1 = rng.standard_normal((40, 3, 3, 3)).astype(np.float32)
    b1 = rng.standard_normal(40).astype(np.float32)
    wd = rng.standard_normal((40, 1, 3, 3)).astype(np.float32)  # depthwise
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 9, 9])
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd"], ["y"], pads=[1, 1, 1, 1], group=40),
    ]
    model = _model(nodes, [x_info], {"w1": w1, "b1": b1, "wd": wd})
    q, report = rewrite(model, fmt)
    assert report.quantized_nodes == 2 and report.quantized_weights == 2
    # the Relu output is known non-negative: only the graph input needs an Abs
    assert sum(n.op_type == "Abs" for n in q.graph.node) == 1

    first = _model(
        [nodes[0], helper.make_node("Relu", ["c1"], ["y"])],
        [x_info],
        {"w1": quantize_conv_weight(w1, fmt), "b1": b1},
    )
    r1_info = helper.make_tensor_value_info("r1", TensorProto.FLOAT, ["n", 40, 5, 5])
    second = _model([nodes[2]], [r1_info], {"wd": quantize_conv_weight(wd, fmt)})
    x = _activations(rng, (2, 3, 9, 9))
    r1 = _run(first, x=quantize(x, fmt, axis=1))
    expected = _run(second, r1=quantize_conv_input(r1, fmt, depthwise=True))
    np.testing.assert_allclose(_run(q, x=x), expected, rtol=1e-5, atol=1e-5)
    # and it really is quantized: differs from the float model
    assert not np.allclose(_run(model, x=x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_weights_are_blocked_along_the_reduction_axis(trans_b: int) -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((40, 10) if not trans_b else (10, 40)).astype(np.float32)
    bias = rng.standard_normal(10).astype(np.float32)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 40])
    model = _model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=trans_b)],
        [x_info],
        {"w": w, "b": bias},
    )
    q, _ = rewrite(model, "msfp9")
    x = rng.standard_normal((4, 40)).astype(np.float32)
    wq = quantize_matmul_weight(w, "msfp9", reduction_axis=1 if trans_b else 0)
    wm = wq.T if trans_b else wq
    expected = quantize(x, "msfp9", axis=1) @ wm + bias
    np.testing.assert_allclose(_run(q, x=x), expected, rtol=1e-5, atol=1e-5)


def test_shared_input_is_quantized_once_and_other_ops_are_untouched() -> None:
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 4, 4])
    w = np.ones((16, 16, 1, 1), np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"]),
        helper.make_node("Conv", ["x", "w"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    q, report = rewrite(_model(nodes, [x_info], {"w": w}), "bfp8")
    assert report.quantized_nodes == 2 and report.quantized_activations == 1
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) == 1
    assert [n.op_type for n in q.graph.node].count("Add") == 1
