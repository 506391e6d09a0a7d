"""The ONNX operators the emulated card runs, for imported models (the built-in featurizers
use only these). Conv, Gemm and MatMul run on the matrix unit in BFP (``rewrite``); the rest
run on the vector unit in float32. A graph with any other operator is refused at load."""

from __future__ import annotations

from collections.abc import Iterable

MATRIX_OPS = frozenset({"Conv", "Gemm", "MatMul"})
VECTOR_OPS = frozenset(
    {
        "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Constant", "Div",
        "Dropout", "Flatten", "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid", "HardSwish",
        "Identity", "LeakyRelu", "MaxPool", "Mul", "Pad", "ReduceMean", "Relu", "Reshape",
        "Sigmoid", "Softmax", "Squeeze", "Sub", "Transpose", "Unsqueeze",
    }
)  # fmt: skip
SUPPORTED_OPS = MATRIX_OPS | VECTOR_OPS


def unsupported_ops(op_types: Iterable[tuple[str, str]]) -> list[str]:
    """The sorted (domain-qualified when not ai.onnx) operators outside ``SUPPORTED_OPS``."""
    bad = {
        op if domain in ("", "ai.onnx") else f"{domain}.{op}"
        for domain, op in op_types
        if domain not in ("", "ai.onnx") or op not in SUPPORTED_OPS
    }
    return sorted(bad)
