"""Checking a user's ONNX image model before it enters the store (``edgefleet models import``).

``inspect_model`` is pure with respect to the store: it reads the file, checks it, pins a
declared input size into the graph and describes what it found. Every refusal is an
``ImportRejected`` whose message is one line a user can act on.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from modules.accelerators.decoded_outputs import (
    BoxFormat,
    BoxUnits,
    DetectionOutputs,
    OutputsNotFound,
    find_outputs,
)
from modules.accelerators.model_store import StoreError

if TYPE_CHECKING:
    import onnx

OPSET_RANGE = (7, 23)  # default-domain opsets this onnxruntime runs and we test
MAX_MODEL_BYTES = 512 * 1024 * 1024
Layout = Literal["NCHW", "NHWC"]
Kind = Literal["classifier", "detector"]


class ImportRejected(StoreError):
    """The file cannot be imported; the message says why in one line."""


@dataclass
class ImportOptions:
    input_size: tuple[int, int] | None = None  # (height, width)
    mean: tuple[float, ...] | None = None  # per channel, in 0..1 pixel units
    std: tuple[float, ...] | None = None
    layout: Layout | None = None
    kind: Kind | None = None
    labels: list[str] | None = None
    max_bytes: int = MAX_MODEL_BYTES
    # detectors whose graph ends in decoded detections (``decoded_outputs``)
    box_format: BoxFormat = "xyxy"
    box_units: BoxUnits = "pixels"
    score_threshold: float = 0.5


@dataclass
class Inspection:
    """What ``inspect_model`` found, plus the (input-pinned) graph to store."""

    model: onnx.ModelProto
    input_name: str
    layout: Layout
    channels: int
    height: int
    width: int
    outputs: list[dict[str, Any]]
    opset: int
    op_counts: dict[str, int]  # of the graph as given
    stored_ops: list[str]  # of the graph as stored (constants folded)
    parameters: int
    macs: int
    kind: Kind
    labels: list[str] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ends_in_softmax: bool
    metadata: dict[str, str] = field(default_factory=dict)
    detection_outputs: DetectionOutputs | None = None  # a detector's boxes/scores/classes

    @property
    def num_classes(self) -> int | None:
        if len(self.outputs) != 1:
            return None
        shape = self.outputs[0]["shape"]
        return shape[-1] if len(shape) == 2 and isinstance(shape[-1], int) else None

    def summary(self) -> dict[str, Any]:
        return {
            "input": {
                "name": self.input_name,
                "layout": self.layout,
                "channels": self.channels,
                "size": [self.height, self.width],
            },
            "outputs": self.outputs,
            "opset": self.opset,
            "op_counts": dict(sorted(self.op_counts.items())),
            "stored_ops": self.stored_ops,
            "parameters": self.parameters,
            "gmacs": round(self.macs / 1e9, 4),
            "kind": self.kind,
            "classes": self.num_classes,
            "labels": "given" if self.labels else "none (class ids)",
            "mean": list(self.mean),
            "std": list(self.std),
            "metadata": self.metadata,
        }


def parse_size(text: str) -> tuple[int, int]:
    """``224x224`` or ``224`` -> (height, width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 8 or max(values) > 4096:
        raise ImportRejected(f"--input-size {text!r}: expected HxW (8..4096), e.g. 224x224")
    return values[0], values[1]


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """``0.5,0.5,0.5``, ``0.5 0.5 0.5`` or a JSON list -> floats (1 or 3 of them)."""
    raw = text.strip().strip("[]").replace(",", " ").split()
    try:
        values = tuple(float(v) for v in raw)
    except ValueError:
        values = ()
    if len(values) not in (1, 3):
        raise ImportRejected(f"{what} {text!r}: expected 1 or 3 numbers, e.g. 0.485,0.456,0.406")
    return values


def parse_labels(text: str) -> list[str]:
    """One label per line, or a JSON list (also how metadata_props may carry them)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise ImportRejected(f"labels are not a valid JSON list: {exc}") from None
        if not isinstance(data, list):
            raise ImportRejected("labels must be a JSON list of strings")
        return [str(v) for v in data]
    return [line.strip() for line in stripped.splitlines() if line.strip()]


def _load(path: Path, max_bytes: int) -> onnx.ModelProto:
    import onnx

    if not path.is_file():
        raise ImportRejected(f"{path}: no such file")
    size = path.stat().st_size
    if size > max_bytes:
        raise ImportRejected(f"{path} is {size} bytes; the import limit is {max_bytes} bytes")
    if size == 0:
        raise ImportRejected(f"{path} is empty")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:  # protobuf and checker errors have many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImportRejected(f"{path} is not a valid ONNX model: {first}") from None
    if not model.graph.node:
        raise ImportRejected(f"{path} is not a valid ONNX model: the graph has no nodes")
    return model


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ImportRejected("the model imports no default-domain (ai.onnx) opset")


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    dims: list[int | str] = []
    for d in value.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return dims


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _meta_get(meta: dict[str, str], *keys: str) -> str | None:
    lowered = {k.lower(): v for k, v in meta.items()}
    for key in keys:
        if key in lowered and lowered[key].strip():
            return lowered[key]
    return None


def _image_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    import onnx

    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    images = [
        i
        for i in inputs
        if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        and len(i.type.tensor_type.shape.dim) == 4
    ]
    if len(inputs) != 1 or len(images) != 1:
        described = ", ".join(f"{i.name}{_dims(i)}" for i in inputs) or "none"
        raise ImportRejected(
            "expected exactly one image input (float32, rank 4, 1 or 3 channels); "
            f"the model's inputs: {described}"
        )
    return images[0]


def _layout(dims: list[int | str], asked: Layout | None) -> Layout:
    first, last = dims[1], dims[3]
    if asked is not None:
        channels = first if asked == "NCHW" else last
        if isinstance(channels, int) and channels not in (1, 3):
            raise ImportRejected(f"--layout {asked}: the input {dims} has {channels} channels")
        return asked
    if first in (1, 3) and last not in (1, 3):
        return "NCHW"
    if last in (1, 3) and first not in (1, 3):
        return "NHWC"
    if first in (1, 3) and last in (1, 3):
        return "NCHW"
    raise ImportRejected(
        f"the input {dims} has no 1- or 3-channel axis at position 1 (NCHW) or 3 (NHWC)"
    )


def _pin_input(
    model: onnx.ModelProto, value: onnx.ValueInfoProto, layout: Layout, size: tuple[int, int]
) -> None:
    """Write the spatial size into the input's dims (batch stays as it is)."""
    spatial = (2, 3) if layout == "NCHW" else (1, 2)
    dims = value.type.tensor_type.shape.dim
    for axis, want in zip(spatial, size, strict=True):
        dims[axis].Clear()
        dims[axis].dim_value = want
    del model.graph.value_info[:]  # stale shapes would contradict the pinned input


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's basic (portable) graph optimizations, as ``models build`` applies them:
    shape arithmetic folded into constants (exporters emit it around Pad, for example),
    BatchNormalization folded into Conv. The result is plain ONNX that every path runs."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgefleet-fold-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        opts.log_severity_level = 4
        try:
            ort.InferenceSession(
                model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ImportRejected(f"onnxruntime cannot load the model: {first}") from None
        folded = onnx.load(opts.optimized_model_filepath)
    folded.metadata_props.extend(p for p in model.metadata_props if p not in folded.metadata_props)
    return folded


def _free_batch(model: onnx.ModelProto, value: onnx.ValueInfoProto) -> None:
    """Make a batch dim fixed at 1 symbolic when the graph then runs a batch of 2 (exporters
    often fix it; batched prediction needs it free). Graphs that bake the batch in keep it."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    first = value.type.tensor_type.shape.dim[0]
    if not (first.HasField("dim_value") and first.dim_value == 1):
        return
    trial = onnx.ModelProto()
    trial.CopyFrom(model)
    dims = [trial.graph.input, trial.graph.output]
    for values in dims:
        for v in values:
            shape = v.type.tensor_type.shape
            if shape.dim and shape.dim[0].HasField("dim_value") and shape.dim[0].dim_value == 1:
                shape.dim[0].Clear()
                shape.dim[0].dim_param = "batch"
    feed = [d.dim_value for d in value.type.tensor_type.shape.dim]
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        sess = ort.InferenceSession(
            trial.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        outs = sess.run(None, {value.name: np.zeros([2, *feed[1:]], np.float32)})
    except Exception:  # onnxruntime raises its own types: the batch stays fixed
        return
    if all(o.shape[:1] == (2,) for o in outs):
        model.CopyFrom(trial)


def _macs_and_shapes(model: onnx.ModelProto) -> tuple[int, dict[str, list[int]]]:
    """Multiply-accumulates of Conv / ConvTranspose / Gemm / MatMul for one image."""
    import numpy as np
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0]
        raise ImportRejected(f"the graph's shapes do not check out: {first}") from None
    shapes: dict[str, list[int]] = {}
    for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        shapes[v.name] = [d if isinstance(d, int) and d > 0 else 1 for d in _dims(v)]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = 0
    for node in inferred.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if out is None:
            continue
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            w = shapes.get(node.input[1])
            if w:
                per_out = int(np.prod(w[1:])) if node.op_type == "Conv" else int(np.prod(w[1:]))
                macs += int(np.prod(out)) * per_out
        elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1:
            a = shapes.get(node.input[0])
            if a:
                macs += int(np.prod(out)) * int(a[-1])
    return macs, shapes


def inspect_model(path: Path, options: ImportOptions) -> Inspection:
    """Check ``path`` and describe it; raises ImportRejected with a one-line reason."""
    import numpy as np
    from onnx import numpy_helper

    model = _load(path, options.max_bytes)
    opset = _opset(model)
    low, high = OPSET_RANGE
    if not low <= opset <= high:
        raise ImportRejected(f"opset {opset} is not supported (supported: {low}..{high})")
    meta = _metadata(model)
    value = _image_input(model)
    dims = _dims(value)
    layout_meta = _meta_get(meta, "layout", "data_format")
    asked_layout = options.layout
    if asked_layout is None and layout_meta:
        asked_layout = (
            "NHWC" if "last" in layout_meta.lower() or "nhwc" in layout_meta.lower() else "NCHW"
        )
    layout = _layout(dims, asked_layout)
    channel_dim = dims[1] if layout == "NCHW" else dims[3]
    channels = channel_dim if isinstance(channel_dim, int) else 3
    spatial = (dims[2], dims[3]) if layout == "NCHW" else (dims[1], dims[2])
    size = options.input_size
    size_meta = _meta_get(meta, "input_size", "image_size")
    if size is None and size_meta:
        size = parse_size(size_meta)
    static = all(isinstance(d, int) and d > 0 for d in spatial)
    if static:
        if size is not None and tuple(size) != tuple(spatial):
            raise ImportRejected(
                f"--input-size {size[0]}x{size[1]} contradicts the model's fixed input "
                f"{spatial[0]}x{spatial[1]}"
            )
        size = (int(spatial[0]), int(spatial[1]))
    elif size is None:
        raise ImportRejected(
            f"the input {value.name}{dims} has a dynamic height/width: give --input-size HxW"
        )
    if size[0] != size[1]:
        raise ImportRejected(f"input size {size[0]}x{size[1]}: only square inputs are served")
    _pin_input(model, value, layout, size)
    _free_batch(model, value)
    original_ops = dict(Counter(n.op_type for n in model.graph.node))
    model = fold_constants(model)
    value = _image_input(model)
    macs, shapes = _macs_and_shapes(model)
    outputs = [
        {
            "name": o.name,
            "shape": _dims(o) if all(isinstance(d, int) for d in _dims(o)[1:]) else _dims(o),
        }
        for o in model.graph.output
    ]
    for out in outputs:  # fill in what shape inference knows
        known = shapes.get(out["name"])
        if known and any(not isinstance(d, int) for d in out["shape"][1:]):
            out["shape"] = [out["shape"][0], *known[1:]]
    kind: Kind = options.kind or (
        "detector"
        if (_meta_get(meta, "kind", "task") or "").lower().startswith("detect")
        else "classifier"
    )
    labels = options.labels
    if labels is None and (text := _meta_get(meta, "labels", "classes", "class_names")):
        labels = parse_labels(text)
    mean = options.mean or (parse_floats(m, "mean") if (m := _meta_get(meta, "mean")) else None)
    std = options.std or (parse_floats(s, "std") if (s := _meta_get(meta, "std")) else None)
    parameters = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            parameters += int(numpy_helper.to_array(node.attribute[0].t).size)
    by_output = {o: n for n in model.graph.node for o in n.output}
    last = by_output.get(model.graph.output[0].name)
    found = Inspection(
        model=model,
        input_name=value.name,
        layout=layout,
        channels=int(channels),
        height=size[0],
        width=size[1],
        outputs=outputs,
        opset=opset,
        op_counts=original_ops,
        stored_ops=sorted({n.op_type for n in model.graph.node}),
        parameters=parameters,
        macs=macs,
        kind=kind,
        labels=labels,
        mean=_per_channel(mean or (0.485, 0.456, 0.406), channels, "mean"),
        std=_per_channel(std or (0.229, 0.224, 0.225), channels, "std"),
        ends_in_softmax=last is not None and last.op_type == "Softmax",
        metadata=meta,
    )
    _check_classifier(found)
    if kind == "detector":
        try:
            found.detection_outputs = find_outputs(outputs)
        except OutputsNotFound as exc:
            raise ImportRejected(str(exc)) from exc
    return found


def _per_channel(values: tuple[float, ...], channels: int, what: str) -> tuple[float, ...]:
    """Three values (the store's Preprocessing keeps RGB triples; a gray model uses the first)."""
    if min(values) <= 0 and what == "std":
        raise ImportRejected(f"std {list(values)}: every value must be > 0")
    if channels == 1 and len(values) == 3:
        values = (sum(values) / 3,)
    return values * 3 if len(values) == 1 else values


def _check_classifier(found: Inspection) -> None:
    if found.kind != "classifier":
        return
    classes = found.num_classes
    if classes is None:
        shapes = ", ".join(f"{o['name']}{o['shape']}" for o in found.outputs)
        raise ImportRejected(
            f"a classifier needs one output [batch, classes]; this model has {shapes} "
            "(use --kind detector to store it without serving)"
        )
    if found.labels is not None and len(found.labels) != classes:
        raise ImportRejected(
            f"{len(found.labels)} labels do not match the output width of {classes} classes"
        )
