"""Rewrite a float ONNX graph so that every Conv/MatMul/Gemm computes with BFP operands.

Weights are quantized offline (``modules.accelerators.bfp``) and stored back as float32
initializers. Activations are quantized at run time by standard ONNX operators inserted before each
Conv/MatMul/Gemm input, with the semantics of ``bfp.quantize`` (blocks along the reduction axis:
channels for Conv; for a depthwise Conv, whose reduction is one channel's kh x kw window, one
block per channel plane; the last axis for MatMul/Gemm inputs):

``[Pad] -> Reshape [.., C/B, B, ..] -> Abs -> ReduceMax`` gives each block's max magnitude;
``Cast(to=FLOAT8E8M0, round_mode="down") -> Cast(FLOAT)`` is exactly ``2**floor(log2(amax))``;
``Mul 2**-(M-1) -> Clip`` gives the step ``s`` within the format's exponent range;
``Div s -> QuantizeLinear(scale 1, int8) -> Clip(+-(2**M-1), int8) -> Cast(FLOAT) -> Mul s``
rounds half to even, saturates and rescales (all exact: ``s`` is a power of two; the int8 Clip is
left out for bfp8 on non-negative inputs, where QuantizeLinear's saturation already does it).
Channel counts that are not a multiple of ``B`` are zero-padded for the block view and sliced back.
Accumulation and bias stay float32 (as in Brainwave's float accumulators). When the model carries
calibration means of its Conv inputs (written by ``models build``), each Conv's bias first absorbs
the mean output shift of its BFP weight rounding (``modules.accelerators.bias_correction``).
Models below opset 24 are converted with ``onnx.version_converter`` first.

A tensor that feeds several quantized ops is quantized once. Activation channel counts (and, for
the cheapest form, the dims after the reduction axis) must be static; the batch may be dynamic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference, version_converter

from modules.accelerators.bfp import (
    BfpFormat,
    get_format,
    quantize_conv_weight,
    quantize_matmul_weight,
)
from modules.accelerators.bias_correction import correct_conv_biases, read_means
from modules.accelerators.onnx_probe import probe_session

TARGET_OPSET = 24
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


class RewriteError(ValueError):
    pass


@dataclass
class RewriteReport:
    fmt: str
    block_size: int
    quantized_nodes: int = 0
    quantized_weights: int = 0
    quantized_activations: int = 0
    bias_corrected: int = 0  # Convs whose bias absorbed the mean error of their BFP weights
    skipped: list[str] = field(default_factory=list)


def _opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def _probe_shapes(model: onnx.ModelProto, names: list[str]) -> dict[str, list[int]]:
    """Run the model once on zeros (symbolic input dims set to 1) and read the shapes of
    ``names``: exact where static shape inference cannot follow shape arithmetic (e.g. the
    computed pads of TF-style "same" padding)."""
    feeds: dict[str, np.ndarray] = {}
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[vi.name] = np.zeros(dims, dtype=dtype)
    values = probe_session(model, names).run(names, feeds)
    return {n: list(np.shape(v)) for n, v in zip(names, values, strict=True)}


def infer_shapes(model: onnx.ModelProto, pin_batch: bool = False) -> dict[str, list[int | None]]:
    """Tensor name -> dims (None where unknown or symbolic) for every tensor ONNX shape inference
    can type, completed for the inputs/outputs of Conv/MatMul/Gemm by one probe run on zeros.
    Probed leading dims of a model with a symbolic batch stay None unless ``pin_batch``."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    batch_symbolic = False
    for vi in work.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            batch_symbolic = True
            if pin_batch:
                dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(work, data_prop=True)
    out: dict[str, list[int | None]] = {}
    infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    for vi in infos:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    for init in inferred.graph.initializer:
        out[init.name] = list(init.dims)
    wanted: list[str] = []
    for node in work.graph.node:
        if node.op_type in QUANTIZED_OPS:
            for name in [*node.input[:2], node.output[0]]:
                dims = out.get(name)
                if name and name not in wanted and (dims is None or None in dims[1:]):
                    wanted.append(name)
    if wanted:
        try:
            probed = _probe_shapes(work, wanted)
        except Exception:  # onnxruntime errors: keep what static inference found
            probed = {}
        for name, dims in probed.items():
            known = out.get(name)
            merged: list[int | None] = list(dims)
            if known is not None and len(known) == len(dims):
                merged = [k if k is not None else d for k, d in zip(known, dims, strict=True)]
            if merged and batch_symbolic and not pin_batch:
                merged[0] = None
            out[name] = merged
    return out


def _nonnegative_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors produced by Relu or by Clip with a constant ``min >= 0`` (ReLU6)."""
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    found: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "Relu":
            found.add(node.output[0])
        elif node.op_type == "Clip":
            low = None
            if len(node.input) > 1 and node.input[1] in consts:
                low = consts[node.input[1]]
            for attr in node.attribute:  # opset < 11
                if attr.name == "min":
                    low = np.array(attr.f)
            if low is not None and low.size == 1 and float(low.reshape(-1)[0]) >= 0:
                found.add(node.output[0])
    return found


class _Builder:
    def __init__(
        self, model: onnx.ModelProto, fmt: BfpFormat, shapes: dict[str, list[int | None]]
    ) -> None:
        self.model = model
        self.fmt = fmt
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.counter = 0
        self.shapes = shapes
        self.cache: dict[tuple[str, int], str] = {}
        self._consts: dict[tuple[str, bytes], str] = {}
        self.nonnegative = _nonnegative_tensors(model)

    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"bfp_{self.fmt.name}_{self.counter}_{base}"

    def const(self, value: np.ndarray) -> str:
        key = (str(value.dtype) + str(value.shape), value.tobytes())
        if key not in self._consts:
            name = self.fresh("c")
            self.inits.append(numpy_helper.from_array(value, name))
            self._consts[key] = name
        return self._consts[key]

    def node(self, op: str, inputs: Sequence[str], **attrs: Any) -> str:
        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def quantize_activation(
        self,
        name: str,
        axis: int,
        rank: int | None = None,
        channels: int | None = None,
        block: int | None = None,
    ) -> str:
        """Insert the run-time BFP quantize-dequantize of tensor ``name`` along ``axis``.

        ``rank``/``channels`` (known from the consumer's weight) stand in for inferred dims;
        ``block`` overrides the format's block size."""
        shape = list(self.shapes.get(name) or [None] * (rank or 0))
        if not shape:
            raise RewriteError(f"tensor {name!r} has no inferred shape; cannot block it")
        if channels is not None and shape[axis] is None:
            shape[axis] = channels
        rank = len(shape)
        axis = axis % rank
        key = (name, axis)
        if key in self.cache:
            return self.cache[key]
        channels = shape[axis]
        if channels is None:
            raise RewriteError(f"tensor {name!r} has a dynamic reduction dim (axis {axis})")
        fmt = self.fmt
        block = block or fmt.block_size
        nblocks = -(-channels // block)
        tail = shape[axis + 1 :]
        static_tail = all(d is not None for d in tail)
        source = name
        pad = nblocks * block - channels
        if nblocks > 1 and pad:
            pads = np.zeros(2 * rank, np.int64)
            pads[rank + axis] = pad
            source = self.node("Pad", [name, self.const(pads)])
        if nblocks == 1:
            blocks, red_axis = source, axis  # one block spans the whole axis
        else:
            target = [0] * axis + [nblocks, block]
            if tail:
                target += [int(d or 0) for d in tail] if static_tail else [-1]
            blocks = self.node("Reshape", [source, self.const(np.array(target, np.int64))])
            red_axis = axis + 1
        axes = self.const(np.array([red_axis], np.int64))
        # Outputs of Relu / Clip(min >= 0) need no Abs (saves a pass over the tensor).
        magnitudes = blocks if name in self.nonnegative else self.node("Abs", [blocks])
        amax = self.node("ReduceMax", [magnitudes, axes], keepdims=1)
        # 2**floor(log2(amax)), exact: E8M0 holds a bare power of two, rounded down.
        pow2 = self.node("Cast", [amax], to=TensorProto.FLOAT8E8M0, round_mode="down")
        pow2f = self.node("Cast", [pow2], to=TensorProto.FLOAT)
        shift = np.array(2.0 ** -(fmt.mantissa_bits - 1), np.float32)
        smin = np.array(2.0 ** (fmt.emin - fmt.mantissa_bits + 1), np.float32)
        smax = np.array(2.0 ** (fmt.emax - fmt.mantissa_bits + 1), np.float32)
        step = self.node(
            "Clip",
            [self.node("Mul", [pow2f, self.const(shift)]), self.const(smin), self.const(smax)],
        )
        qmax = fmt.qmax
        scaled = self.node("Div", [blocks, step])  # exact: step is a power of two
        # QuantizeLinear with unit scale = round half to even + saturate to int8 in one pass;
        # Clip (int8) narrows to +-(2**M - 1); Cast + Mul multiplies by the step.
        codes = self.node(
            "QuantizeLinear",
            [scaled, self.const(np.array(1.0, np.float32)), self.const(np.array(0, np.int8))],
        )
        if qmax < 127 or name not in self.nonnegative:  # else QuantizeLinear already saturated
            codes = self.node(
                "Clip",
                [codes, self.const(np.array(-qmax, np.int8)), self.const(np.array(qmax, np.int8))],
            )
        # codes x step, exact (|codes| <= 127, the step a power of two); Cast + broadcast Mul
        # measured faster on onnxruntime than a blocked DequantizeLinear.
        out = self.node("Mul", [self.node("Cast", [codes], to=TensorProto.FLOAT), step])
        if nblocks > 1:
            out = self.node("Reshape", [out, self.node("Shape", [source])])
            if pad:
                out = self.node(
                    "Slice",
                    [
                        out,
                        self.const(np.array([0], np.int64)),
                        self.const(np.array([channels], np.int64)),
                        self.const(np.array([axis], np.int64)),
                    ],
                )
        self.cache[key] = out
        return out

    def quantize_plane(self, name: str) -> str:
        """Quantize a depthwise Conv's input ``[N, C, H, W]`` with one block per channel plane, as
        ``bfp.quantize_conv_input(depthwise=True)``: a depthwise conv reduces over one channel's
        window, so no block may span two channels."""
        key = (name, -100)
        if key in self.cache:
            return self.cache[key]
        shape = self.shapes.get(name)
        if not shape or len(shape) < 3 or any(d is None for d in shape[1:]):
            raise RewriteError(f"tensor {name!r} needs static channel and spatial dims")
        plane = int(np.prod([int(d or 0) for d in shape[2:]]))
        flat = self.node("Reshape", [name, self.const(np.array([0, 0, plane], np.int64))])
        self.shapes[flat] = [shape[0], shape[1], plane]
        if name in self.nonnegative:
            self.nonnegative.add(flat)
        quantized = self.quantize_activation(flat, 2, block=plane)
        out = self.node("Reshape", [quantized, self.node("Shape", [name])])
        self.cache[key] = out
        return out


def rewrite(
    model: onnx.ModelProto,
    fmt: str | BfpFormat,
    block_size: int | None = None,
    *,
    weights: bool = True,
    activations: bool = True,
    bias_correction: bool = True,
) -> tuple[onnx.ModelProto, RewriteReport]:
    """Return a copy of ``model`` computing every Conv/MatMul/Gemm in BFP ``fmt``, and a report.

    With ``bias_correction`` (and weights quantized), when the model carries calibration means
    of its Conv inputs (``bias_correction.METADATA_KEY``, written by ``models build``), each
    Conv's float32 bias absorbs the mean output shift of its BFP weight rounding."""
    f = get_format(fmt, block_size)
    if f.qmax > 127:
        raise RewriteError(f"format {f.name} has more than 8 bits per element")
    shapes = infer_shapes(model)  # before the opset conversion (tensor names are kept)
    work = onnx.ModelProto()
    work.CopyFrom(model)
    if _opset(work) < TARGET_OPSET:
        try:
            work = version_converter.convert_version(work, TARGET_OPSET)
        except Exception as exc:  # the converter raises bare RuntimeErrors
            raise RewriteError(f"cannot convert the model to opset {TARGET_OPSET}: {exc}") from exc
    work.ir_version = max(work.ir_version, 10)
    report = RewriteReport(fmt=f.name, block_size=f.block_size)
    means = read_means(model) if bias_correction and weights else None
    if means:
        report.bias_corrected = correct_conv_biases(
            work, means, lambda w: quantize_conv_weight(w, f)
        )
    graph = work.graph
    inits = {t.name: t for t in graph.initializer}
    b = _Builder(work, f, shapes)
    new_weights: dict[tuple[str, str, int], str] = {}

    def weight(name: str, kind: str, axis: int) -> str | None:
        if name not in inits:
            return None
        key = (name, kind, axis)
        if key not in new_weights:
            w = numpy_helper.to_array(inits[name]).astype(np.float32)
            if kind == "conv":
                qw = quantize_conv_weight(w, f)
            else:
                qw = quantize_matmul_weight(w, f, axis)
            qname = b.fresh(f"w_{name}")
            b.inits.append(numpy_helper.from_array(qw.astype(np.float32), qname))
            new_weights[key] = qname
            report.quantized_weights += 1
        return new_weights[key]

    for node in graph.node:
        if node.op_type not in QUANTIZED_OPS or node.domain not in ("", "ai.onnx"):
            b.nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        inputs = list(node.input)
        a_name, w_name = inputs[0], inputs[1]
        rank_w = len(b.shapes.get(w_name) or [])
        depthwise = False
        if node.op_type == "Conv":
            w_dims = b.shapes.get(w_name) or []
            per_group = w_dims[1] if len(w_dims) > 1 else None
            depthwise = int(attrs.get("group", 1)) > 1 and per_group == 1
            a_axis, w_kind, w_axis = 1, "conv", 1
        elif node.op_type == "Gemm":
            a_axis = 0 if attrs.get("transA", 0) else 1
            w_kind, w_axis = "matmul", 1 if attrs.get("transB", 0) else 0
        else:
            a_axis, w_kind, w_axis = -1, "matmul", -2 if rank_w >= 2 else 0
        try:
            if activations:
                before = len(b.cache)
                hint = None
                w_shape = b.shapes.get(w_name)
                if node.op_type == "Conv" and w_shape and w_shape[1] is not None:
                    hint = int(w_shape[1]) * int(attrs.get("group", 1))
                conv_rank = rank_w if node.op_type == "Conv" else None
                if depthwise:
                    inputs[0] = b.quantize_plane(a_name)
                else:
                    inputs[0] = b.quantize_activation(a_name, a_axis, conv_rank, hint)
                report.quantized_activations += len(b.cache) - before
            if weights:
                qw_name = weight(w_name, w_kind, w_axis)
                if qw_name is not None:
                    inputs[1] = qw_name
                elif activations:
                    inputs[1] = b.quantize_activation(w_name, w_axis)
        except RewriteError as exc:
            report.skipped.append(f"{node.name or node.op_type}: {exc}")
            b.nodes.append(node)
            continue
        new = helper.make_node(node.op_type, inputs, list(node.output), name=node.name)
        new.attribute.extend(node.attribute)
        b.nodes.append(new)
        report.quantized_nodes += 1

    del graph.node[:]
    graph.node.extend(b.nodes)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]  # constant outputs stay too
    del graph.initializer[:]
    graph.initializer.extend(kept + b.inits)
    return work, report
