"""The ONNX operators the emulated card runs, for imported models and detectors (the built-in
featurizers use only these). Conv, Gemm and MatMul run on the matrix unit in BFP (``rewrite``);
the rest run on the vector unit in float32 (``FREE_OPS`` only relabel a tensor and cost no
cycles; the cycle model charges the others by the elements they stream). A graph with any other
operator is refused at load."""

from __future__ import annotations

from collections.abc import Iterable

MATRIX_OPS = frozenset({"Conv", "Gemm", "MatMul"})
VECTOR_OPS = frozenset(
    {
        "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Constant", "Div",
        "Dropout", "Flatten", "Gather", "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid",
        "HardSwish", "Identity", "LeakyRelu", "MaxPool", "Mul", "Pad", "PRelu", "ReduceL2",
        "ReduceMean", "ReduceSum", "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax",
        "Split", "Sqrt", "Squeeze", "Sub", "Transpose", "Unsqueeze",
    }
)  # fmt: skip
# only a new view of a tensor's memory: no vector-unit cycles
FREE_OPS = frozenset(
    {"Constant", "Dropout", "Flatten", "Identity", "Reshape", "Shape", "Squeeze", "Unsqueeze"}
)
SUPPORTED_OPS = MATRIX_OPS | VECTOR_OPS


def unsupported_ops(op_types: Iterable[tuple[str, str]]) -> list[str]:
    """The sorted (domain-qualified when not ai.onnx) operators outside ``SUPPORTED_OPS``."""
    bad = {
        op if domain in ("", "ai.onnx") else f"{domain}.{op}"
        for domain, op in op_types
        if domain not in ("", "ai.onnx") or op not in SUPPORTED_OPS
    }
    return sorted(bad)
