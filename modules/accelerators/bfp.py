"""Block floating point (BFP) numerics of the emulated FPGA: quantize-dequantize in numpy.

A tensor is cut into blocks of ``block_size`` consecutive values along one axis (the reduction
axis of the conv/matmul that consumes it). Each block shares one exponent; each value keeps a sign
and ``M`` magnitude bits. Exact semantics, identical in this module and in the ONNX rewrite
(``modules.accelerators.fpga.rewrite``):

* **Blocks.** Values ``x[..., k*B:(k+1)*B]`` along the axis form block ``k``; when the axis length
  is not a multiple of ``B`` the last block is shorter (as if padded with zeros).
* **Shared exponent.** ``E = floor(log2(max|x|))`` over the block, i.e. the exponent of the largest
  magnitude, clamped to the format's range ``[emin, emax]``. An all-zero block takes ``emin``.
  ``+-inf`` gives ``emax``.
* **Elements.** Sign-magnitude with ``M`` magnitude bits and the leading bit explicit (no hidden
  bit): ``q = clip(round_half_even(x / s), -(2**M - 1), 2**M - 1)`` with step
  ``s = 2**(E - M + 1)``; the value is ``q * s``. The largest element of a block therefore has
  ``2**(M-1) <= |q| <= 2**M - 1``.
* **Rounding.** Round to nearest, ties to even (``numpy.rint``; ONNX ``Round``/``QuantizeLinear``).
* **Saturation.** Magnitudes that round above ``(2**M - 1) * s`` (the block maximum rounding up,
  or any value when ``E`` was clamped to ``emax``) saturate to ``+-(2**M - 1) * s``; no inf.
* **Subnormals / underflow.** There is no per-element exponent: values much smaller than the block
  maximum lose bits and round to zero (below ``s/2``). When ``E`` is clamped to ``emin`` the step
  stays ``2**(emin - M + 1)`` (gradual underflow). A NaN makes its whole block undefined.
* **Error bound.** Without clamping, ``|q*s - x| <= s/2`` for every value that does not saturate
  and ``< s`` for the block maximum, so ``|error| <= max|x| * 2**(1 - M)`` for every value.

Formats (``FORMATS``):

=======  ============================  ==========  ====  =====  =================
name     reference                     element     M     block  shared exponent
=======  ============================  ==========  ====  =====  =================
bfp8     OCP MXINT8-like               int8 (s+7)  7     32     8 bit, [-120, 127]
msfp9    Brainwave ms-fp9 (1-5-3)      s+3         3     16     5 bit, [-15, 16]
msfp8    Brainwave ms-fp8 (1-5-2)      s+2         2     16     5 bit, [-15, 16]
=======  ============================  ==========  ====  =====  =================

bfp8 uses the E8M0 exponent range, limited below to -120 so that every step ``s`` is a normal
float32 (the emulator computes in float32); MXINT8 allows -128, this format stops at -127.
The 5-bit exponents of ms-fp use bias 15 and all 32 codes. Block sizes can be changed
(``get_format("msfp9", block_size=32)``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class BfpFormat:
    name: str
    mantissa_bits: int  # magnitude bits M, sign excluded, leading bit explicit
    exponent_bits: int  # width of the shared exponent
    block_size: int
    emin: int
    emax: int
    reference: str = ""

    @property
    def qmax(self) -> int:
        """Largest element magnitude code, ``2**M - 1``."""
        return (1 << self.mantissa_bits) - 1

    @property
    def bits_per_value(self) -> float:
        """Storage per value including its share of the block exponent."""
        return 1 + self.mantissa_bits + self.exponent_bits / self.block_size

    def step(self, exponent: npt.ArrayLike) -> FloatArray:
        """Quantization step ``2**(E - M + 1)`` for shared exponent(s) ``E`` (float32)."""
        e = np.asarray(exponent, dtype=np.int32) - (self.mantissa_bits - 1)
        return np.ldexp(np.float32(1.0), e).astype(np.float32)


FORMATS: dict[str, BfpFormat] = {
    "bfp8": BfpFormat("bfp8", 7, 8, 32, -120, 127, "OCP MXINT8-like"),
    "msfp9": BfpFormat("msfp9", 3, 5, 16, -15, 16, "Brainwave ms-fp9 (1s.5e.3m)"),
    "msfp8": BfpFormat("msfp8", 2, 5, 16, -15, 16, "Brainwave ms-fp8 (1s.5e.2m)"),
}


class UnknownFormatError(ValueError):
    pass


def get_format(name: str | BfpFormat, block_size: int | None = None) -> BfpFormat:
    """Look up a format by name, optionally with another block size (16 or 32 typical)."""
    if isinstance(name, BfpFormat):
        fmt = name
    else:
        try:
            fmt = FORMATS[name.lower()]
        except KeyError:
            known = ", ".join(FORMATS)
            raise UnknownFormatError(
                f"unknown block floating point format {name!r} (known: {known})"
            ) from None
    if block_size is not None and block_size != fmt.block_size:
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        fmt = replace(fmt, block_size=block_size)
    return fmt


def shared_exponents(block_max: npt.ArrayLike, fmt: BfpFormat) -> npt.NDArray[np.int32]:
    """``floor(log2(max|x|))`` per block (exact, via frexp), clamped to ``[emin, emax]``."""
    amax = np.asarray(block_max, dtype=np.float32)
    _, e = np.frexp(amax)  # amax = m * 2**e with m in [0.5, 1)
    exp = (e.astype(np.int32) - 1).astype(np.int32)
    exp = np.where(amax > 0, exp, fmt.emin)
    exp = np.where(np.isinf(amax), fmt.emax, exp)
    return np.clip(exp, fmt.emin, fmt.emax).astype(np.int32)


def _blocked(x: FloatArray, axis: int, block: int) -> tuple[FloatArray, tuple[int, ...], int]:
    """Move ``axis`` last, zero-pad it to a multiple of ``block``; return (blocks, shape, n)."""
    moved = np.moveaxis(x, axis, -1)
    n = moved.shape[-1]
    pad = (-n) % block
    if pad:
        widths = [(0, 0)] * (moved.ndim - 1) + [(0, pad)]
        moved = np.pad(moved, widths)
    shape = moved.shape
    return moved.reshape(*shape[:-1], shape[-1] // block, block), shape, n


def encode(
    x: npt.ArrayLike, fmt: str | BfpFormat, axis: int = -1
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Quantize to codes: (element codes ``q`` shaped ``[..., nblocks, B]`` with the axis
    moved last and zero-padded, shared exponents ``[..., nblocks]``)."""
    f = get_format(fmt)
    arr = np.asarray(x, dtype=np.float32)
    blocks, _, _ = _blocked(arr, axis, f.block_size)
    with np.errstate(invalid="ignore"):
        amax = np.max(np.abs(blocks), axis=-1)
    exps = shared_exponents(amax, f)
    step = f.step(exps)[..., None]
    q = np.clip(np.rint(blocks / step), -f.qmax, f.qmax)
    return q.astype(np.int32), exps


def quantize(x: npt.ArrayLike, fmt: str | BfpFormat, axis: int = -1) -> FloatArray:
    """Quantize-dequantize ``x`` (float32 result, same shape) with blocks along ``axis``."""
    f = get_format(fmt)
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 0:
        return quantize(arr.reshape(1), f).reshape(())
    axis = axis % arr.ndim
    blocks, padded_shape, n = _blocked(arr, axis, f.block_size)
    with np.errstate(invalid="ignore"):
        amax = np.max(np.abs(blocks), axis=-1)
    step = f.step(shared_exponents(amax, f))[..., None]
    with np.errstate(invalid="ignore", over="ignore"):
        q = np.clip(np.rint(blocks / step), -f.qmax, f.qmax) * step
    out = q.reshape(padded_shape)[..., :n]
    return np.ascontiguousarray(np.moveaxis(out, -1, axis)).astype(np.float32, copy=False)


def quantize_conv_input(
    x: npt.ArrayLike, fmt: str | BfpFormat, depthwise: bool = False
) -> FloatArray:
    """Quantize-dequantize a Conv's activation input ``[N, C, *spatial]``.

    A regular conv reduces over input channels: blocks of ``B`` run along ``C`` at each pixel. A
    depthwise conv (``Cin/group == 1``) reduces over one channel's kh x kw window, so a block
    must stay inside one channel: each channel's plane shares one exponent (one block per
    channel). Blocks across channels would share an exponent between channels whose ranges
    differ by orders of magnitude and flush the quiet ones to zero. (Blocks of ``B`` values
    inside a plane, along rows or in raster order, measured 3.1-3.9x fp32 host time in the
    emulator, over its 3x budget, against 2.6-2.7x for one block per plane.)
    """
    arr = np.asarray(x, dtype=np.float32)
    if not depthwise or arr.ndim < 3:
        return quantize(arr, fmt, axis=1)
    flat = arr.reshape(*arr.shape[:2], -1)
    per_plane = get_format(fmt, block_size=flat.shape[-1])
    return quantize(flat, per_plane, axis=-1).reshape(arr.shape)


def quantize_conv_weight(w: npt.ArrayLike, fmt: str | BfpFormat) -> FloatArray:
    """Quantize a Conv weight ``[Cout, Cin/group, kh, kw]``.

    Each output channel's reduction vector is taken in im2col order ``(kh, kw, cin)`` (channel
    fastest, the order the hardware streams it) and cut into blocks; for a depthwise conv
    (``Cin/group == 1``) a block therefore spans the kernel window.
    """
    arr = np.asarray(w, dtype=np.float32)
    if arr.ndim < 3:
        return quantize(arr, fmt, axis=-1)
    cout, cin = arr.shape[0], arr.shape[1]
    spatial = arr.shape[2:]
    perm = (0, *range(2, arr.ndim), 1)  # [Cout, kh, kw, Cin]
    flat = np.transpose(arr, perm).reshape(cout, -1)
    q = quantize(flat, fmt, axis=-1).reshape(cout, *spatial, cin)
    inverse = np.argsort(perm)
    return np.ascontiguousarray(np.transpose(q, inverse))


def quantize_matmul_weight(
    w: npt.ArrayLike, fmt: str | BfpFormat, reduction_axis: int
) -> FloatArray:
    """Quantize a MatMul/Gemm weight matrix with blocks along its reduction axis."""
    return quantize(w, fmt, axis=reduction_axis)
