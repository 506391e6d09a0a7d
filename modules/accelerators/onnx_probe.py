"""Reading a graph's intermediate tensors: expose them as outputs, run onnxruntime on the CPU.

Graph optimizations are off so that every named tensor is still computed as the graph says
(fusions would remove a Conv's input, for example). onnx and onnxruntime are imported on use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx


def conv_input_names(model: onnx.ModelProto) -> list[str]:
    """The data input of every Conv, each once, in graph order."""
    return list(dict.fromkeys(n.input[0] for n in model.graph.node if n.op_type == "Conv"))


def probe_session(model: onnx.ModelProto, names: Sequence[str]) -> Any:
    """A CPU ``onnxruntime.InferenceSession`` on a copy of ``model`` whose outputs include
    ``names`` (``model`` is not changed)."""
    import onnx
    import onnxruntime as ort

    work = onnx.ModelProto()
    work.CopyFrom(model)
    present = {o.name for o in work.graph.output}
    for name in names:
        if name not in present:
            work.graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # failed probes are caught by the callers
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(work.SerializeToString(), opts, providers=["CPUExecutionProvider"])
