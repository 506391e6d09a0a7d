"""The cycle model: hand-computed cycles, weight streaming, layer extraction, shipped config."""

from __future__ import annotations

import numpy as np
import pytest

from modules.accelerators.bfp import FORMATS
from modules.accelerators.fpga.cycle_model import (
    CardConfig,
    CycleModel,
    Layer,
    layers_from_onnx,
    load_config,
)
from tests.support.fpga import tiny_featurizer


def test_shipped_config_is_the_documented_arria10_class_card() -> None:
    cfg = load_config()
    assert cfg == CardConfig()  # the YAML and the defaults agree
    assert (cfg.native_vector, cfg.lanes, cfg.tiles, cfg.clock_mhz) == (128, 8, 6, 300)
    assert cfg.macs_per_cycle == 6144


def test_cycles_of_a_dense_and_a_depthwise_layer() -> None:
    cfg = CardConfig(layer_overhead_cycles=0, inference_overhead_us=0, pcie_gbytes_per_s=1e9)
    dense = Layer("dense", "Conv", positions=10, k=256, outputs=96)
    depthwise = Layer("dw", "Conv", positions=100, k=9, outputs=1, groups=96)
    model = CycleModel([dense, depthwise], cfg, FORMATS["bfp8"].bits_per_value)
    lat = model.latency(batch=1, input_bytes=0, output_bytes=0)
    # dense: ceil(256/128)=2 * ceil(96/48)=2 * 10 = 40; depthwise: 1 * ceil(96/48)=2 * 100 = 200
    assert lat.cycles == 240
    assert lat.ideal_cycles == 40 + 15  # ceil(9*96*100 / 6144) = 15
    assert lat.device_ms == pytest.approx(240 / 300e6 * 1e3)
    assert lat.memory_stall_ms == 0
    # batch scales positions
    assert model.latency(batch=4, input_bytes=0, output_bytes=0).cycles == 960


def test_overheads_transfer_and_weight_streaming() -> None:
    layer = Layer("fc", "Gemm", positions=1, k=4096, outputs=4096)  # 16.8 M weights
    on_chip = CycleModel([layer], CardConfig(onchip_weight_mbytes=100), 8.25)
    streamed = CycleModel([layer], CardConfig(onchip_weight_mbytes=1), 8.25)
    assert on_chip.weights_on_chip and not streamed.weights_on_chip
    a = on_chip.latency(1, input_bytes=7_000_000, output_bytes=0)
    b = streamed.latency(1, input_bytes=7_000_000, output_bytes=0)
    assert a.transfer_ms == pytest.approx(1.0)  # 7 MB at 7 GB/s
    assert a.overhead_ms == pytest.approx(256 / 300e6 * 1e3 + 0.04)
    # 16.8M weights * 8.25 bits = 17.3 MB at 25.6 GB/s = 0.676 ms; the layer takes that instead
    # of its 32 * 86 = 2752 compute cycles
    assert b.compute_ms == pytest.approx(2752 / 300e6 * 1e3)
    streaming_ms = 16_777_216 * 8.25 / 8 / 25.6e9 * 1e3
    assert b.compute_ms + b.memory_stall_ms == pytest.approx(streaming_ms, rel=1e-3)
    assert b.device_ms > a.device_ms + 0.6
    assert streamed.flash_ms() == pytest.approx(1500 + 20 * 16_777_216 * 8.25 / 8 / 1e6)


def test_layers_from_onnx_follow_the_graph() -> None:
    layers = layers_from_onnx(tiny_featurizer(0, feature_dim=24))
    assert [(lay.positions, lay.k, lay.outputs, lay.groups) for lay in layers] == [
        (64, 27, 40, 1),  # 3x3 stride 2 on 16x16 -> 8x8, K = 3*3*3
        (64, 9, 1, 40),  # depthwise
        (64, 40, 24, 1),  # 1x1
    ]
    assert sum(lay.macs for lay in layers) == 64 * (27 * 40 + 9 * 40 + 40 * 24)


def test_vector_work_hides_behind_the_matrix_unit_until_it_exceeds_it() -> None:
    cfg = CardConfig(layer_overhead_cycles=0, inference_overhead_us=0, pcie_gbytes_per_s=1e9)
    bits = FORMATS["bfp8"].bits_per_value
    # 100 positions x 1 vector x 1 lane group = 100 matrix cycles
    hidden = Layer("conv", "Conv", positions=100, k=27, outputs=10, vector_elements=128 * 60)
    exposed = Layer("conv", "Conv", positions=100, k=27, outputs=10, vector_elements=128 * 250)
    a = CycleModel([hidden], cfg, bits).latency(1, 0, 0)
    b = CycleModel([exposed], cfg, bits).latency(1, 0, 0)
    assert (a.cycles, a.vector_cycles, a.vector_stall_ms) == (100, 60, 0)
    assert (b.cycles, b.vector_cycles) == (250, 250)
    assert b.vector_stall_ms == pytest.approx(150 / 300e6 * 1e3)


def test_a_fully_convolutional_network_is_modelled_at_the_size_it_runs_at() -> None:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    slope = numpy_helper.from_array(np.full((8, 1, 1), 0.25, np.float32), "slope")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"]),
            helper.make_node("PRelu", ["c", "slope"], ["y"]),
        ],
        "fcn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, "oh", "ow"])],
        initializer=[w, slope],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (small,) = layers_from_onnx(model, (12, 12))
    (large,) = layers_from_onnx(model, (102, 52))
    assert (small.positions, small.vector_elements) == (100, 800)  # PRelu over 8 x 10 x 10
    assert (large.positions, large.vector_elements) == (5000, 40000)
    assert large.k == small.k == 27
