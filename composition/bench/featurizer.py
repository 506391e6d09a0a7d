"""The featurizer benchmark: latency, throughput, speed-up over onnxruntime fp32 CPU, share of the
machine's physical peak, and top-1 agreement with fp32 on every evaluation set (``objects`` and
``hard``, see ``modules.featurizer.evalset``), also restricted to inputs where fp32 is not near
a tie."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.accelerators.classify import ImageClassifier
from modules.accelerators.cpu import physical_cores
from modules.accelerators.model_store import ModelStore
from modules.accelerators.select import open_accelerator
from modules.accelerators.session import FeaturizerSession
from modules.featurizer.agreement import agreement, probabilities, top1

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def cpu_peak(cores: int | None = None) -> dict[str, Any]:
    """Physical peak from the CPU's vector units: MACs/cycle/core x cores x clock.

    fp32: AVX-512 = 2 FMA ports x 16 lanes = 32 MACs/cycle (AVX2: 16). int8: AVX-512 VNNI
    VPDPBUSD = 64 MACs per instruction x 2 ports = 128 (AVX2 VNNI: 64; no VNNI: half).
    AMX tiles are not counted (onnxruntime's convolutions do not use them).
    """
    flags: set[str] = set()
    mhz = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
            elif key.strip() == "cpu MHz" and not mhz:
                mhz = float(value)
    except OSError:
        pass
    try:
        mhz = max(
            mhz,
            int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000,
        )
    except (OSError, ValueError):
        pass
    ghz = (mhz or 2000.0) / 1000.0
    avx512 = "avx512f" in flags
    fp32_per_cycle = 32 if avx512 else (16 if "fma" in flags else 8)
    if "avx512_vnni" in flags:
        int8_per_cycle = 128
    elif "avx_vnni" in flags or avx512:
        int8_per_cycle = 64
    else:
        int8_per_cycle = 32
    n = cores or physical_cores()
    return {
        "cores": n,
        "ghz": round(ghz, 3),
        "vector_units": "avx512" if avx512 else ("avx2" if "avx2" in flags else "sse"),
        "vnni": "avx512_vnni" in flags or "avx_vnni" in flags,
        "amx_int8": "amx_int8" in flags,
        "fp32_gmacs": round(n * ghz * fp32_per_cycle, 1),
        "int8_gmacs": round(n * ghz * int8_per_cycle, 1),
        # AMX TMUL: 1024 int8 MACs/cycle/core (OpenVINO/oneDNN use it; onnxruntime convs do not)
        "amx_int8_gmacs": round(n * ghz * 1024, 1) if "amx_int8" in flags else None,
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    import numpy as np

    arr = np.asarray(samples) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p90_ms": round(float(np.percentile(arr, 90)), 3),
        "p99_ms": round(float(np.percentile(arr, 99)), 3),
        "mean_ms": round(float(arr.mean()), 3),
    }


def measure(
    session: FeaturizerSession,
    one: npt.NDArray[np.float32],
    eight: npt.NDArray[np.float32],
    iterations: int,
    seconds: float,
) -> dict[str, Any]:
    """Batch-1 latency percentiles and batch-8 throughput (stops early after ``seconds``)."""
    for _ in range(5):
        session.featurize(one)
    samples: list[float] = []
    device: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < iterations and (len(samples) < 20 or time.perf_counter() < deadline):
        start = time.perf_counter()
        session.featurize(one)
        samples.append(time.perf_counter() - start)
        if session.last_device_ms is not None:
            device.append(session.last_device_ms)
    session.featurize(eight)
    runs, start = 0, time.perf_counter()
    while runs < max(3, iterations // 8) and (runs < 3 or time.perf_counter() - start < seconds):
        session.featurize(eight)
        runs += 1
    elapsed = time.perf_counter() - start
    result: dict[str, Any] = {"iterations": len(samples), **_percentiles(samples)}
    result["throughput_ips_batch8"] = round(runs * 8 / elapsed, 1)
    if device:
        result["device_ms"] = _percentiles([d / 1000.0 for d in device])
    return result


def run_bench(
    store: ModelStore,
    model: str,
    accelerator: str,
    precision: str,
    iterations: int = 200,
    seconds: float = 15.0,
    threads: int | None = None,
    eval_per_photo: int | None = None,
    eval_set: str = "objects",
    engine: str | None = None,
    device: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    from modules.featurizer.build import preprocess_arrays
    from modules.featurizer.evalset import EVAL_SETS, eval_images

    say = progress or (lambda _m: None)
    manifest = store.get(model)
    say("preparing the evaluation sets")
    sets = {
        name: preprocess_arrays(eval_images(name, eval_per_photo), manifest.preprocessing)
        for name in (eval_set, *(s for s in EVAL_SETS if s != eval_set))
    }
    data = sets[eval_set]
    one, eight = data[:1], data[:8]
    say("measuring the onnxruntime fp32 CPU baseline")
    baseline = open_accelerator(
        "cpu", model, "fp32", store=store, threads=threads, engine="onnxruntime"
    )
    base = measure(baseline, one, eight, iterations, seconds)
    base_cls = ImageClassifier(baseline, store)
    say("fp32 on the evaluation sets")
    reference = {name: probabilities(base_cls, batch) for name, batch in sets.items()}
    # Each set's own sensitivity: fp32 against fp32 on inputs with +-0.5 LSB of uniform noise.
    pre = manifest.preprocessing
    lsb = np.float32(pre.scale) / np.asarray(pre.std, np.float32)[:, None, None]  # one pixel step
    noise_floor: dict[str, float] = {}
    for name, batch in sets.items():
        noise = np.random.default_rng(0).uniform(-0.5, 0.5, batch.shape).astype(np.float32)
        noisy = top1(base_cls, (batch + noise * lsb).astype(np.float32))
        noise_floor[name] = round(float((noisy == reference[name].argmax(1)).mean()), 4)
    baseline.close()
    say(f"measuring {accelerator} {precision}")
    target = open_accelerator(
        accelerator, model, precision, store=store, threads=threads, engine=engine, device=device
    )
    result = measure(target, one, eight, iterations, seconds)
    say("top-1 agreement with fp32")
    target_cls = ImageClassifier(target, store)
    accuracy = {
        name: {
            **agreement(reference[name], top1(target_cls, batch)),
            "fp32_agreement_under_half_lsb_input_noise": noise_floor[name],
        }
        for name, batch in sets.items()
    }
    peak = cpu_peak(threads)
    macs = manifest.featurizer_macs
    int8 = precision == "int8" and target.accelerator == "cpu"
    peak_gmacs = peak["int8_gmacs"] if int8 else peak["fp32_gmacs"]
    achieved = macs / (result["p50_ms"] / 1000.0) / 1e9
    report: dict[str, Any] = {
        "model": model,
        "synthetic_weights": manifest.synthetic_weights,
        "accelerator": accelerator,
        "ran_on": target.accelerator,
        "engine": target.engine,
        "precision": precision,
        "notice": target.notice,
        "batch1": {k: v for k, v in result.items() if k != "throughput_ips_batch8"},
        "throughput_ips_batch8": result["throughput_ips_batch8"],
        "baseline_cpu_fp32": base,
        "speedup_p50": round(base["p50_ms"] / result["p50_ms"], 3),
        "speedup_throughput": round(
            result["throughput_ips_batch8"] / base["throughput_ips_batch8"], 3
        ),
        "featurizer_gmacs": round(macs / 1e9, 3),
        "achieved_gmacs_per_s": round(achieved, 1),
        "physical_peak": {**peak, "used_gmacs": peak_gmacs},
        "fraction_of_peak": round(achieved / peak_gmacs, 3)
        if target.accelerator == "cpu"
        else None,
        # above 1.0 means the engine used AMX tiles (OpenVINO does); this is the share of that peak
        "fraction_of_amx_peak": (
            round(achieved / peak["amx_int8_gmacs"], 3) if int8 and peak["amx_int8_gmacs"] else None
        ),
        "eval_set": eval_set,
        "eval_inputs": int(len(data)),
        "top1_agreement_with_fp32": accuracy[eval_set]["top1_agreement_with_fp32"],
        "fp32_agreement_under_half_lsb_input_noise": noise_floor[eval_set],
        "accuracy": accuracy,  # every evaluation set, the chosen one first
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "onnxruntime": ort.__version__,
        },
    }
    if "device_ms" in result:
        report["emulated_device_ms"] = result["device_ms"]
        report["host_vs_fp32_cpu"] = round(result["p50_ms"] / base["p50_ms"], 3)
    target.close()
    return report
