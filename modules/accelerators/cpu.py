"""The CPU path: onnxruntime with threads = physical cores, full graph optimization, warm-up.

int8 on x86 without VNNI: both engines' int8 kernels multiply the uint8 activations by the int8
weights with VPMADDUBSW, which adds each pair of products into an int16 with saturation (two
products of 255 x 127 overflow it). On EfficientNet-Lite0 that took int8's top-1 agreement with
fp32 from 0.990 to 0.886 (onnxruntime) and 0.871 (OpenVINO) on ``objects``. There onnxruntime
runs int8 with ``session.x64quantprecision`` (its exact uint8 x uint8 kernels) and ``auto``
does not pick OpenVINO for int8, which has no such switch (see docs/featurizer.md).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.accelerators.model_store import ModelStore
from modules.accelerators.session import AcceleratorError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from modules.accelerators.cpu_openvino import OpenVinoFeaturizer


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads and other CPUs' cores excluded)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    count = len(allowed) if allowed else (os.cpu_count() or 1)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return max(1, count)
    cores: set[tuple[str, str]] = set()
    processor, physical, core = "", "0", ""
    for line in text.splitlines() + [""]:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            processor = value
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
        elif not line.strip() and processor:
            if allowed is None or int(processor) in allowed:
                cores.add((physical, core or processor))
            processor, physical, core = "", "0", ""
    return max(1, min(count, len(cores) or count))


# Any of these gives x86 an int8 dot product that accumulates into int32 without saturation.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The x86 feature flags of ``/proc/cpuinfo`` (its first ``flags`` line); empty where there
    is none (another OS, another architecture)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def int8_saturates(flags: Collection[str]) -> bool:
    """Whether this x86 CPU's fast int8 kernels add products pairwise into saturating int16s
    (AVX2 or AVX-512 without VNNI)."""
    return bool({"avx2", "avx512bw"} & set(flags)) and not VNNI_FLAGS & set(flags)


def session_options(threads: int | None = None, *, exact_int8: bool = False) -> Any:
    """``exact_int8``: onnxruntime's uint8 x uint8 int8 kernels instead of the saturating
    uint8 x int8 ones (slower; only x86 without VNNI needs them)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or physical_cores()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # Real-weight CNNs produce denormal floats (dead channels); x86 slows down 3-5x on them.
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    if exact_int8:
        opts.add_session_config_entry("session.x64quantprecision", "1")
    return opts


class OrtFeaturizer:
    """An onnxruntime session over one featurizer artifact, warmed up, with IO binding."""

    def __init__(
        self,
        path: Path,
        *,
        accelerator: str,
        model: str,
        precision: str,
        providers: list[Any] | None = None,
        threads: int | None = None,
        warmup: int = 3,
        notice: str | None = None,
    ) -> None:
        import onnxruntime as ort

        self.accelerator = accelerator
        self.model = model
        self.precision = precision
        self.notice = notice
        self.last_device_ms: float | None = None
        self.threads = threads or physical_cores()
        try:
            self._session = ort.InferenceSession(
                str(path),
                sess_options=session_options(
                    self.threads, exact_int8=precision == "int8" and int8_saturates(cpu_flags())
                ),
                providers=providers or ["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise AcceleratorError(f"onnxruntime cannot load {path.name}: {exc}") from exc
        used = self._session.get_providers()
        self.engine = f"onnxruntime {ort.__version__} {used[0]}"
        self.input_name = self._session.get_inputs()[0].name
        self.output_name = self._session.get_outputs()[0].name
        shape = self._session.get_inputs()[0].shape
        self.input_shape = [d if isinstance(d, int) else 1 for d in shape]
        self._warmup(warmup)

    def _warmup(self, runs: int) -> None:
        import numpy as np

        if runs <= 0:
            return
        dummy = np.zeros(self.input_shape, dtype=np.float32)
        for _ in range(runs):
            self.featurize(dummy)

    def featurize(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        import numpy as np

        binding = self._session.io_binding()
        binding.bind_cpu_input(self.input_name, np.ascontiguousarray(batch, dtype=np.float32))
        binding.bind_output(self.output_name)
        self._session.run_with_iobinding(binding)
        out: npt.NDArray[np.float32] = binding.copy_outputs_to_cpu()[0]
        return out

    def close(self) -> None:
        self._session = None


CPU_ENGINE_ENV = "EDGEFLEET_CPU_ENGINE"  # auto | onnxruntime | openvino
CPU_ENGINES = ("auto", "onnxruntime", "openvino")


def choose_engine(engine: str | None, precision: str, flags: Collection[str] | None = None) -> str:
    """``auto``: OpenVINO for int8 when it is installed and the CPU (``flags``, by default this
    one's) has VNNI (measured faster there: it uses AMX), onnxruntime otherwise (and always for
    the fp32 baseline)."""
    from modules.accelerators.cpu_openvino import openvino_available

    engine = engine or os.environ.get(CPU_ENGINE_ENV) or "auto"
    if engine not in CPU_ENGINES:
        raise AcceleratorError(f"unknown CPU engine {engine!r}; choose {', '.join(CPU_ENGINES)}")
    if engine != "auto":
        return engine
    if precision == "int8" and openvino_available():
        if not int8_saturates(cpu_flags() if flags is None else flags):
            return "openvino"
    return "onnxruntime"


SATURATION_NOTICE = (
    "OpenVINO's int8 kernels saturate on this CPU (x86 without VNNI): int8 results drift from "
    "fp32; the onnxruntime engine computes them exactly here"
)


def open_cpu(
    store: ModelStore,
    model: str,
    precision: str = "fp32",
    threads: int | None = None,
    warmup: int = 3,
    notice: str | None = None,
    engine: str | None = None,
) -> OrtFeaturizer | OpenVinoFeaturizer:
    from modules.accelerators.cpu_openvino import OpenVinoFeaturizer

    if precision == "fp16":
        raise AcceleratorError(
            "fp16 is a GPU precision; on the CPU use fp32 or int8 (--precision int8)"
        )
    path = store.featurizer_path(model, precision)
    if choose_engine(engine, precision) == "openvino":
        if precision == "int8" and int8_saturates(cpu_flags()):
            notice = "; ".join(filter(None, (notice, SATURATION_NOTICE)))
        return OpenVinoFeaturizer(
            path,
            model=model,
            precision=precision,
            threads=threads or physical_cores(),
            warmup=warmup,
            notice=notice,
        )
    return OrtFeaturizer(
        path,
        accelerator="cpu",
        model=model,
        precision=precision,
        threads=threads,
        warmup=warmup,
        notice=notice,
    )
