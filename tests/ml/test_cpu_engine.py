"""Which CPU engine and int8 kernels run int8: VNNI decides (``modules.accelerators.cpu``)."""

from __future__ import annotations

import pytest

from modules.accelerators import cpu
from modules.accelerators.cpu import (
    choose_engine,
    cpu_flags,
    int8_saturates,
    session_options,
)

EPYC_AVX2 = frozenset({"sse4_1", "avx", "avx2", "fma"})
XEON_AMX = frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_int8"})
SKYLAKE_X = frozenset({"avx2", "avx512f", "avx512bw"})
ALDER_LAKE = frozenset({"avx2", "avx_vnni"})


def test_cpu_flags_reads_the_first_flags_line() -> None:
    text = "processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\nflags\t: fpu\n"
    assert cpu_flags(text) == {"fpu", "avx2", "avx512_vnni"}
    assert cpu_flags("processor\t: 0\nFeatures\t: fp asimd asimddp\n") == frozenset()


@pytest.mark.parametrize(
    ("flags", "saturates"),
    [
        (EPYC_AVX2, True),
        (SKYLAKE_X, True),
        (XEON_AMX, False),
        (ALDER_LAKE, False),
        (frozenset(), False),  # not x86, or flags unknown
    ],
)
def test_int8_saturates_on_x86_without_vnni(flags: frozenset[str], saturates: bool) -> None:
    assert int8_saturates(flags) is saturates


def test_auto_takes_openvino_for_int8_only_with_vnni(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    monkeypatch.delenv(cpu.CPU_ENGINE_ENV, raising=False)
    assert choose_engine(None, "int8", XEON_AMX) == "openvino"
    assert choose_engine(None, "int8", EPYC_AVX2) == "onnxruntime"
    assert choose_engine(None, "fp32", XEON_AMX) == "onnxruntime"
    assert choose_engine("openvino", "int8", EPYC_AVX2) == "openvino"  # asked for: kept


def test_exact_int8_sets_onnxruntimes_precise_kernels() -> None:
    pytest.importorskip("onnxruntime")
    key = "session.x64quantprecision"
    assert session_options(1, exact_int8=True).get_session_config_entry(key) == "1"
    with pytest.raises(RuntimeError):  # onnxruntime raises for a key never set
        session_options(1).get_session_config_entry(key)
