"""Detectors in a BFP format (``bfp8``, ``msfp9``, ``msfp8``) without a stored variant: the
stored fp32 network is rewritten when it is opened by the FPGA emulator's rewrite
(``fpga.rewrite``: every Conv/MatMul/Gemm on BFP operands), then run on the CPU with the card's
numerics. Conv input means embedded by ``models quantize`` are used for bias correction."""

from __future__ import annotations

from pathlib import Path

from modules.accelerators.bfp import FORMATS
from modules.accelerators.model_store import ModelManifest
from modules.accelerators.session import AcceleratorError

AT_LOAD_ARCHITECTURES = ("mtcnn", "decoded")  # detectors whose runners rewrite at load


def is_bfp(precision: str) -> bool:
    from modules.accelerators.bfp import get_format

    try:
        get_format(precision)
    except (KeyError, ValueError):
        return False
    return True


def rewritten(fp32: Path, precision: str, what: str) -> bytes:
    """The fp32 network at ``fp32`` in BFP ``precision``, serialized (``what`` names it in the
    one-line error)."""
    import onnx

    from modules.accelerators.fpga.rewrite import RewriteError, rewrite

    try:
        model, _report = rewrite(onnx.load(str(fp32)), precision)
    except RewriteError as exc:
        raise AcceleratorError(f"{what} cannot run in {precision}: {exc}") from exc
    return bytes(model.SerializeToString())


def formats_at_load(manifest: ModelManifest) -> list[str]:
    """The BFP formats a detector can be opened in by rewriting its fp32 networks at load."""
    if (
        manifest.kind != "detector"
        or manifest.detector is None
        or manifest.detector.architecture not in AT_LOAD_ARCHITECTURES
        or "fp32" not in manifest.featurizer
    ):
        return []
    return [name for name in FORMATS if name not in manifest.featurizer]
