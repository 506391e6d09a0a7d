"""Error-compensating rounding of conv weights onto onnxruntime's int8 grid (GPTQ-style).

onnxruntime's static quantizer rounds each weight to the nearest point of its output channel's
grid ``scale = max|w| / 127``. Rounding to nearest minimizes the weight error, not the output
error. Following GPTQ (Frantar et al. 2022, after Optimal Brain Quantization), the weights of an
output channel are rounded one input position at a time, and the rounding error of each is
pushed onto the positions not yet rounded, weighted by the second moments of the conv's input
(``H = E[x x^T]`` over im2col columns, measured with the fp32 featurizer on calibration images;
``H`` is damped by 1 % of its mean diagonal). The result lies exactly on the same grid (each
channel keeps its largest weight at +-127 steps, so the quantizer recomputes the same scale and
reproduces the chosen codes), so the int8 graph, and its latency, do not change.

Torch is used for the im2col and the Cholesky factorizations (build time only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modules.accelerators.onnx_probe import conv_input_names, probe_session

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import onnx

DAMPING = 0.01


def _conv_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def conv_input_second_moments(
    model: onnx.ModelProto, input_name: str, data: npt.NDArray[np.float32], batch: int = 4
) -> dict[str, Any]:
    """Conv output name -> ``H`` as a float64 torch tensor ``[groups, K, K]``, ``K = Cin/groups *
    kh * kw`` in im2col order ``(cin, kh, kw)`` (the flattened weight's order)."""
    import numpy as np
    import torch
    import torch.nn.functional as F  # noqa: N812
    from onnx import numpy_helper

    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    inits = {t.name: t for t in model.graph.initializer}
    names = conv_input_names(model)
    sess = probe_session(model, names)
    sums: dict[str, Any] = {}
    counts: dict[str, int] = {}
    shapes = {n.output[0]: tuple(numpy_helper.to_array(inits[n.input[1]]).shape) for n in convs}
    for start in range(0, len(data), batch):
        outputs = sess.run(names, {input_name: data[start : start + batch]})
        values = dict(zip(names, outputs, strict=True))
        for node in convs:
            attrs = _conv_attrs(node)
            cout, cin_g, *kernel = shapes[node.output[0]]
            groups = int(attrs.get("group", 1))
            pads = list(attrs.get("pads", [0] * 4))
            x = torch.from_numpy(values[node.input[0]])
            x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
            cols = F.unfold(
                x,
                tuple(kernel),
                dilation=tuple(attrs.get("dilations", [1, 1])),
                stride=tuple(attrs.get("strides", [1, 1])),
            ).double()  # [N, C*kh*kw, L], channel-major
            n, _, length = cols.shape
            k = cin_g * int(np.prod(kernel)) if kernel else cin_g
            cols = cols.reshape(n, groups, k, length).permute(1, 2, 0, 3).reshape(groups, k, -1)
            moment = torch.bmm(cols, cols.transpose(1, 2))
            key = node.output[0]
            sums[key] = sums.get(key, 0) + moment
            counts[key] = counts.get(key, 0) + n * length
    return {name: total / counts[name] for name, total in sums.items()}


def round_to_int8_grid(weight: npt.NDArray[np.float32], moments: Any) -> npt.NDArray[np.float32]:
    """GPTQ rounding of a conv weight ``[Cout, Cin/g, kh, kw]`` onto its per-channel symmetric
    int8 grid, given ``H`` ``[groups, K, K]``; returns the dequantized weights (float32)."""
    import numpy as np
    import torch

    cout = weight.shape[0]
    groups, k, _ = moments.shape
    per_group = cout // groups
    original = torch.from_numpy(weight.reshape(cout, k).astype(np.float64))
    scale = original.abs().max(dim=1).values / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    # one Hessian per output row: [Cout, K, K] views for depthwise, shared rows otherwise
    h = moments.repeat_interleave(per_group, dim=0) if groups > 1 else moments
    diag = torch.diagonal(h, dim1=1, dim2=2)
    dead = diag <= 0
    eye = torch.eye(k, dtype=h.dtype)
    h = h + torch.diag_embed(dead.to(h.dtype))  # an input never seen: plain rounding there
    damp = DAMPING * torch.diagonal(h, dim1=1, dim2=2).mean(dim=1) + 1e-12
    h = h + damp[:, None, None] * eye
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    work = original.clone()
    codes = torch.zeros_like(work)
    rows_h = hinv if hinv.shape[0] == cout else hinv.expand(cout, k, k)
    for col in range(k):
        q = torch.clamp(torch.round(work[:, col] / scale), -127, 127)
        codes[:, col] = q
        err = (work[:, col] - q * scale) / rows_h[:, col, col]
        work[:, col + 1 :] -= err[:, None] * rows_h[:, col, col + 1 :]
    largest = original.abs().argmax(dim=1)
    rows = torch.arange(cout)
    codes[rows, largest] = torch.sign(original[rows, largest]) * 127  # keeps the scale
    zero = original.abs().max(dim=1).values == 0
    codes[zero] = 0
    out = (codes * scale[:, None]).numpy().astype(np.float32)
    return out.reshape(weight.shape)


def gptq_int8_weights(
    model: onnx.ModelProto, input_name: str, data: npt.NDArray[np.float32], batch: int = 4
) -> dict[str, npt.NDArray[np.float32]]:
    """Weight initializer name -> GPTQ-rounded int8-grid weights for every Conv of ``model``
    (``batch``: images per run; 1 for a graph whose batch is fixed at one)."""
    from onnx import numpy_helper

    moments = conv_input_second_moments(model, input_name, data, batch)
    inits = {t.name: t for t in model.graph.initializer}
    out: dict[str, npt.NDArray[np.float32]] = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in inits:
            continue
        if node.output[0] not in moments:
            continue
        weight = numpy_helper.to_array(inits[node.input[1]]).astype("float32")
        if node.input[1] not in out and weight.ndim == 4:
            out[node.input[1]] = round_to_int8_grid(weight, moments[node.output[0]])
    return out
