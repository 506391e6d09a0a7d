"""Block floating point numerics: hand-computed cases and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modules.accelerators.bfp import (
    FORMATS,
    UnknownFormatError,
    encode,
    get_format,
    quantize,
    quantize_conv_weight,
    shared_exponents,
)


def test_msfp9_hand_computed_block() -> None:
    # max |x| = 1.0 -> E = 0, M = 3 -> step 2**-2 = 0.25
    x = np.array([1.0, 0.3, -0.7, 0.01, 0.125, 0.375], np.float32)
    q, e = encode(x, "msfp9")
    assert e.tolist() == [0]
    assert q[0, :6].tolist() == [4, 1, -3, 0, 0, 2]  # 0.125/0.25 = 0.5 -> 0, 1.5 -> 2 (ties even)
    np.testing.assert_array_equal(quantize(x, "msfp9"), [1.0, 0.25, -0.75, 0.0, 0.0, 0.5])


def test_msfp8_hand_computed_block() -> None:
    # max 3.0 -> E = 1, M = 2 -> step 1.0; codes limited to +-3
    x = np.array([3.0, 1.5, -2.5, 0.4], np.float32)
    np.testing.assert_array_equal(quantize(x, "msfp8"), [3.0, 2.0, -2.0, 0.0])


def test_bfp8_hand_computed_block() -> None:
    # max 1.0 -> E = 0, M = 7 -> step 2**-6 = 0.015625
    x = np.array([1.0, 0.3, -0.7, 0.01], np.float32)
    np.testing.assert_array_equal(quantize(x, "bfp8"), [1.0, 0.296875, -0.703125, 0.015625])


def test_block_maximum_saturates_instead_of_overflowing() -> None:
    # 1.9 / 0.25 = 7.6 -> rounds to 8, which does not fit 3 bits: saturates to 7 * 0.25
    x = np.array([1.9, -1.95, 0.5], np.float32)
    np.testing.assert_array_equal(quantize(x, "msfp9"), [1.75, -1.75, 0.5])


def test_blocks_are_independent_along_the_axis() -> None:
    fmt = get_format("msfp8", block_size=2)
    x = np.array([[8.0, 1.0, 0.5, 0.125]], np.float32)
    # block 0: max 8 -> step 4 -> [8, 0]; block 1: max 0.5 -> step 0.25 -> [0.5, 0] (tie: even)
    np.testing.assert_array_equal(quantize(x, fmt, axis=1), [[8.0, 0.0, 0.5, 0.0]])
    # along axis 0 every value is its own block: exact
    np.testing.assert_array_equal(quantize(x, fmt, axis=0), x)


def test_ragged_last_block_and_zero_block() -> None:
    fmt = get_format("msfp9", block_size=4)
    x = np.array([0, 0, 0, 0, 1.0, 0.3], np.float32)
    np.testing.assert_array_equal(quantize(x, fmt), [0, 0, 0, 0, 1.0, 0.25])


def test_exponent_is_exact_at_powers_of_two_and_clamped() -> None:
    f = FORMATS["msfp9"]
    amax = np.array([1.0, 2.0, 0.5, np.nextafter(np.float32(2), 0), 0.0, 1e30, np.inf], np.float32)
    assert shared_exponents(amax, f).tolist() == [0, 1, -1, 0, f.emin, f.emax, f.emax]


def test_saturation_at_emax_and_underflow_at_emin() -> None:
    f = FORMATS["msfp9"]
    big = np.array([1e9, -1e9], np.float32)
    top = 7 * 2.0 ** (f.emax - 2)
    np.testing.assert_array_equal(quantize(big, f), [top, -top])
    tiny = np.array([2.0**-20, 2.0**-17], np.float32)  # below 2**emin: step stays 2**(emin-2)
    np.testing.assert_array_equal(quantize(tiny, f), [0.0, 2.0**-17])


def test_conv_weight_blocks_follow_im2col_order() -> None:
    # depthwise 3x3: each output channel's 9 taps form one block
    w = np.zeros((2, 1, 3, 3), np.float32)
    w[0, 0, 0, 0] = 1.0
    w[0, 0, 2, 2] = 0.3
    w[1, 0, 1, 1] = 0.01  # another channel, own exponent: exact
    q = quantize_conv_weight(w, "msfp9")
    assert q[0, 0, 0, 0] == 1.0 and q[0, 0, 2, 2] == 0.25
    # 0.01 alone: E = -7, step 2**-9, 0.01 / 2**-9 = 5.12 -> 5
    assert q[1, 0, 1, 1] == 5 * 2.0**-9


def test_unknown_format_is_refused() -> None:
    with pytest.raises(UnknownFormatError):
        get_format("fp4")


# within every format's exponent range (no clamping at emax)
finite = st.floats(-6e4, 6e4, allow_nan=False, allow_infinity=False, width=32)
arrays = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=40), elements=finite
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays, st.sampled_from(sorted(FORMATS)))
def test_error_bound_and_idempotence(x: np.ndarray, name: str) -> None:
    f = FORMATS[name]
    q = quantize(x, f, axis=-1)
    assert q.shape == x.shape and q.dtype == np.float32
    np.testing.assert_array_equal(quantize(q, f, axis=-1), q)  # idempotent
    codes, exps = encode(x, f, axis=-1)
    assert np.abs(codes).max(initial=0) <= f.qmax
    # per block: |error| <= max|x| * 2**(1-M) (no clamping for these magnitudes)
    n = x.shape[-1]
    pad = (-n) % f.block_size
    xb = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)]).reshape(*x.shape[:-1], -1, f.block_size)
    qb = np.pad(q, [(0, 0)] * (q.ndim - 1) + [(0, pad)]).reshape(xb.shape)
    amax = np.abs(xb).max(axis=-1, keepdims=True)
    err = np.abs(qb.astype(np.float64) - xb)
    assert np.all(
        err <= amax * 2.0 ** (1 - f.mantissa_bits) * (1 + 1e-6) + 2.0 ** (f.emin - f.mantissa_bits)
    )
    # non-saturating values are within half a step
    step = f.step(exps)[..., None].astype(np.float64)
    small = np.abs(xb) <= (f.qmax - 0.5) * step
    assert np.all(err[small] <= step.repeat(f.block_size, -1)[small] / 2)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays, st.sampled_from(sorted(FORMATS)))
def test_sign_symmetry(x: np.ndarray, name: str) -> None:
    np.testing.assert_array_equal(quantize(-x, name), -quantize(x, name))
