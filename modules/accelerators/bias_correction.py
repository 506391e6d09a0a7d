"""Bias correction for quantized convolution weights (Nagel et al. 2019, empirical form).

Rounding a conv's weights to a low-precision format changes each output channel's expected
value by ``E[(Wq - W) * x] = sum_{cin, kh, kw} (Wq - W)[cout, cin, kh, kw] * E[x_cin]``. That
shift is systematic (it does not average out over pixels or images), it passes through every
later layer, and EfficientNet-Lite0's depthwise kernels make it large. Folding its negative into
the float32 bias removes it: ``b' = b - (Wq - W) . E[x]``.

``E[x_cin]`` is the mean of each input channel of every Conv over calibration images (never
evaluation inputs). ``models build`` measures it once on the fp32 featurizer and stores it in the
artifact's ONNX metadata (``METADATA_KEY``: JSON ``{conv input tensor name: [mean per
channel]}``), so that anything that quantizes the fp32 artifact later (the int8 build, the FPGA
emulator's BFP rewrite at load time) can correct its own weight rounding without seeing images.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

from modules.accelerators.onnx_probe import conv_input_names, probe_session

METADATA_KEY = "edgefleet.conv_input_channel_means"

FloatArray = npt.NDArray[np.float32]
WeightQuantizer = Callable[[FloatArray], FloatArray]


def conv_input_means(
    model: onnx.ModelProto, batches: Iterable[dict[str, npt.NDArray[Any]]]
) -> dict[str, FloatArray]:
    """Mean of every input channel of every Conv (over batch and pixels), on onnxruntime."""
    names = conv_input_names(model)
    sess = probe_session(model, names)
    sums: dict[str, npt.NDArray[np.float64]] = {}
    count = 0
    for feeds in batches:
        values = sess.run(names, feeds)
        for name, value in zip(names, values, strict=True):
            arr = np.asarray(value, np.float64)
            per_channel = arr.reshape(arr.shape[0], arr.shape[1], -1).mean(axis=2).sum(axis=0)
            sums[name] = sums.get(name, 0) + per_channel
        count += int(np.asarray(values[0]).shape[0]) if values else 0
    if not count:
        raise ValueError("no calibration batches")
    return {name: (total / count).astype(np.float32) for name, total in sums.items()}


def embed_means(model: onnx.ModelProto, means: dict[str, FloatArray]) -> None:
    """Store the means in the model's metadata (replacing earlier ones)."""
    payload = json.dumps({k: [float(f"{v:.6g}") for v in m.tolist()] for k, m in means.items()})
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.append(onnx.StringStringEntryProto(key=METADATA_KEY, value=payload))


def read_means(model: onnx.ModelProto) -> dict[str, FloatArray] | None:
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            raw = json.loads(prop.value)
            return {k: np.asarray(v, np.float32) for k, v in raw.items()}
    return None


def correct_conv_biases(
    model: onnx.ModelProto,
    means: dict[str, FloatArray],
    quantize_weight: WeightQuantizer | None = None,
    *,
    new_weights: dict[str, FloatArray] | None = None,
) -> int:
    """Fold ``-(Wq - W) . E[x]`` into the bias of every Conv (in place) whose input has a mean,
    whose weight and bias are initializers and whose channel counts match. ``Wq`` is
    ``quantize_weight(W)``, or ``new_weights[weight name]``, which then also replaces ``W`` in
    the model. Returns the number of corrected Convs."""
    inits = {t.name: t for t in model.graph.initializer}
    users: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    corrected = 0
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 3:
            continue
        x_name, w_name, b_name = node.input[0], node.input[1], node.input[2]
        mu = means.get(x_name)
        if mu is None or w_name not in inits or b_name not in inits or users[b_name] != 1:
            continue
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        b = numpy_helper.to_array(inits[b_name]).astype(np.float32)
        group = next((int(a.i) for a in node.attribute if a.name == "group"), 1)
        cout, cin_g = int(w.shape[0]), int(w.shape[1])
        if mu.shape != (cin_g * group,) or cout % group or b.shape != (cout,):
            continue
        if new_weights is not None:
            if w_name not in new_weights:
                continue
            wq = np.asarray(new_weights[w_name], np.float32)
            inits[w_name].CopyFrom(numpy_helper.from_array(wq, w_name))
        elif quantize_weight is not None:
            wq = quantize_weight(w)
        else:
            raise ValueError("quantize_weight or new_weights is needed")
        delta = (wq - w).reshape(cout, cin_g, -1).sum(axis=2)
        mu_out = np.repeat(mu.reshape(group, cin_g), cout // group, axis=0)  # [Cout, Cin/g]
        shift = (delta.astype(np.float64) * mu_out).sum(axis=1)
        inits[b_name].CopyFrom(numpy_helper.from_array((b - shift).astype(np.float32), b_name))
        corrected += 1
    return corrected


def int8_per_channel(w: FloatArray) -> FloatArray:
    """What onnxruntime's static quantizer does to a Conv weight with per-channel symmetric int8
    (``scale = max|w| / 127`` per output channel, round half to even), dequantized."""
    flat = w.reshape(w.shape[0], -1)
    scale = np.abs(flat).max(axis=1) / np.float32(127.0)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    q = np.clip(np.rint(flat / scale[:, None]), -127, 127) * scale[:, None]
    return q.reshape(w.shape).astype(np.float32)
