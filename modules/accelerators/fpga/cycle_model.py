"""Cycle model of the emulated FPGA card: device latency per inference from layer shapes.

A Brainwave-style matrix-vector unit has ``tiles * lanes`` dot-product engines, each consuming
``native_vector`` BFP values of the reduction per cycle. A layer with ``P`` output positions,
reduction length ``K`` (``Cin/group * kh * kw`` for Conv) and ``Cout/group`` outputs per group takes

    compute = ceil(K / native_vector) * ceil(Cout / (tiles*lanes)) * P   cycles

(groups of a grouped/depthwise conv are spread over the lanes; the ideal, ``MACs /
(tiles*lanes*native_vector)``, is reported beside it: the ceilings are the unused parts of the
vectors, large for depthwise convolutions whose K is only kh*kw). Weights pinned on chip cost
nothing per inference; when the model's BFP weights exceed ``onchip_weight_mbytes`` every layer
streams its weights from DRAM and takes ``max(compute, weight_bytes / DRAM bytes-per-cycle)``. Each
layer adds ``layer_overhead_cycles``; each inference adds ``inference_overhead_us`` plus the PCIe
transfer of the input tensor (float32) and the output features. Loading a model takes
``flash_ms + flash_ms_per_mbyte * weight MB``.

Vector-unit operators (activations such as PRelu, pooling, Softmax, Slice, Concat, ...) stream
``vector_lanes`` float32 values per cycle through the multifunction units that follow the
matrix unit, charged by the larger of their input and output element counts (``ops.FREE_OPS``,
mere reshapes, cost nothing). They are chained behind the matrix layer before them and overlap
it, so a layer takes ``max(matrix cycles, its vector cycles)``; the excess is reported as
``vector_stall_ms``. Vector operators before the first matrix layer are charged to it.

A fully convolutional network (symbolic height and width) is modelled at the size it is run
at: ``layers_from_onnx(model, (h, w))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from pydantic import BaseModel

DEFAULT_CONFIG = Path(__file__).with_name("arria10.yaml")


class CardConfig(BaseModel):
    name: str = "arria10-bfp"
    clock_mhz: float = 300.0
    native_vector: int = 128
    lanes: int = 8
    tiles: int = 6
    vector_lanes: int = 128
    dram_gbytes_per_s: float = 25.6
    pcie_gbytes_per_s: float = 7.0
    onchip_weight_mbytes: float = 6.0
    layer_overhead_cycles: int = 256
    inference_overhead_us: float = 40.0
    flash_ms: float = 1500.0
    flash_ms_per_mbyte: float = 20.0

    @property
    def macs_per_cycle(self) -> int:
        return self.tiles * self.lanes * self.native_vector


def load_config(path: Path | str | None = None) -> CardConfig:
    """Read a card config (YAML); the shipped Arria 10-class defaults when ``path`` is None."""
    source = Path(path) if path is not None else DEFAULT_CONFIG
    data = yaml.safe_load(source.read_text()) or {}
    return CardConfig.model_validate(data)


@dataclass(frozen=True)
class Layer:
    """One matrix layer at batch 1: ``positions`` output pixels (rows), reduction ``k`` per group,
    ``outputs`` per group, ``groups``."""

    name: str
    op: str
    positions: int
    k: int
    outputs: int
    groups: int = 1
    vector_elements: int = 0  # float32 values the vector ops chained after it stream

    @property
    def macs(self) -> int:
        return self.positions * self.k * self.outputs * self.groups

    @property
    def weights(self) -> int:
        return self.k * self.outputs * self.groups


class DeviceLatency(BaseModel):
    device_ms: float  # total emulated device time for the batch
    compute_ms: float
    memory_stall_ms: float
    transfer_ms: float
    overhead_ms: float
    cycles: int
    ideal_cycles: int
    utilization: float  # ideal / actual compute cycles
    batch: int
    vector_stall_ms: float = 0.0  # vector-unit time beyond what the matrix unit hides
    vector_cycles: int = 0  # all vector-unit cycles, hidden or not


class CycleModel:
    def __init__(
        self,
        layers: list[Layer],
        config: CardConfig,
        bits_per_value: float,
        bitstream_bytes: float | None = None,
    ) -> None:
        """``bitstream_bytes``: the weights of every network flashed with this one (they share
        the on-chip memory); default: this network's own."""
        self.layers = layers
        self.config = config
        self.bits_per_value = bits_per_value
        self.bitstream_bytes = bitstream_bytes

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def weight_bytes(self) -> float:
        return sum(layer.weights for layer in self.layers) * self.bits_per_value / 8

    @property
    def weights_on_chip(self) -> bool:
        resident = self.weight_bytes if self.bitstream_bytes is None else self.bitstream_bytes
        return resident <= self.config.onchip_weight_mbytes * 1e6

    def flash_ms(self) -> float:
        return self.config.flash_ms + self.config.flash_ms_per_mbyte * self.weight_bytes / 1e6

    def latency(self, batch: int, input_bytes: int, output_bytes: int) -> DeviceLatency:
        c = self.config
        hz = c.clock_mhz * 1e6
        lanes = c.tiles * c.lanes
        dram_bytes_per_cycle = c.dram_gbytes_per_s * 1e9 / hz
        stream = not self.weights_on_chip
        compute = ideal = stall = vector_stall = vector = 0
        for layer in self.layers:
            rows = layer.positions * batch
            cyc = math.ceil(layer.k / c.native_vector)
            cyc *= math.ceil(layer.outputs * layer.groups / lanes) * rows
            compute += cyc
            ideal += math.ceil(layer.macs * batch / c.macs_per_cycle)
            busy = cyc
            if stream:
                mem = math.ceil(layer.weights * self.bits_per_value / 8 / dram_bytes_per_cycle)
                stall += max(0, mem - cyc)
                busy = max(cyc, mem)
            vec = math.ceil(layer.vector_elements * batch / c.vector_lanes)
            vector += vec
            vector_stall += max(0, vec - busy)
        overhead_cycles = c.layer_overhead_cycles * len(self.layers)
        cycles = compute + stall + vector_stall + overhead_cycles
        transfer_ms = (input_bytes + output_bytes) / (c.pcie_gbytes_per_s * 1e9) * 1e3
        overhead_ms = overhead_cycles / hz * 1e3 + c.inference_overhead_us / 1e3
        device_ms = cycles / hz * 1e3 + transfer_ms + c.inference_overhead_us / 1e3
        return DeviceLatency(
            device_ms=device_ms,
            compute_ms=compute / hz * 1e3,
            memory_stall_ms=stall / hz * 1e3,
            transfer_ms=transfer_ms,
            overhead_ms=overhead_ms,
            cycles=cycles,
            ideal_cycles=ideal,
            utilization=ideal / compute if compute else 0.0,
            batch=batch,
            vector_stall_ms=vector_stall / hz * 1e3,
            vector_cycles=vector,
        )


def with_input_size(model: object, height: int, width: int) -> object:
    """A copy of ``model`` whose first input has spatial size ``height`` x ``width`` (for a
    fully convolutional network declared with symbolic dims)."""
    import onnx

    assert isinstance(model, onnx.ModelProto)
    sized = onnx.ModelProto()
    sized.CopyFrom(model)
    dims = sized.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims[2:4], (height, width), strict=False):
        dim.Clear()
        dim.dim_value = value
    return sized


def _elements(dims: list[int] | None) -> int:
    return math.prod(dims) if dims else 0


def layers_from_onnx(model: object, size: tuple[int, int] | None = None) -> list[Layer]:
    """The Conv/MatMul/Gemm layers of an ONNX model at batch 1 (shapes from shape inference),
    each with the vector-unit work chained after it; ``size`` pins a symbolic height x width."""
    import onnx
    from onnx import helper

    from modules.accelerators.fpga.ops import FREE_OPS
    from modules.accelerators.fpga.rewrite import infer_shapes

    if size is not None:
        model = with_input_size(model, *size)
    assert isinstance(model, onnx.ModelProto)
    known = infer_shapes(model, pin_batch=True)
    shapes = {k: [d if d is not None else 1 for d in v] for k, v in known.items()}
    layers: list[Layer] = []
    pending = 0  # vector work seen before the first matrix layer
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            if node.op_type in FREE_OPS:
                continue
            work = max(_elements(shapes.get(name)) for name in [*node.input[:1], *node.output])
            if layers:
                last = layers[-1]
                layers[-1] = replace(last, vector_elements=last.vector_elements + work)
            else:
                pending += work
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = shapes.get(node.input[1])
        out = shapes.get(node.output[0])
        if not w or not out:
            continue
        label = node.name or node.output[0]
        if node.op_type == "Conv":
            groups = int(attrs.get("group", 1))
            k = math.prod(w[1:])
            positions = math.prod(out[2:]) if len(out) > 2 else 1
            layers.append(Layer(label, "Conv", positions, k, w[0] // groups, groups, pending))
        else:
            trans_b = node.op_type == "Gemm" and bool(attrs.get("transB", 0))
            k, n = (w[-1], w[-2]) if trans_b else (w[-2], w[-1])
            positions = math.prod(out[:-1]) if len(out) > 1 else 1
            layers.append(Layer(label, node.op_type, positions, k, n, 1, pending))
        pending = 0
    return layers
