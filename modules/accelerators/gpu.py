"""The GPU path: onnxruntime-gpu with the TensorRT and CUDA execution providers.

Precisions: ``fp16`` (the fp16 artifact; TensorRT with fp16 kernels), ``int8`` (the QDQ artifact;
TensorRT explicit quantization), ``fp32``. Without a usable GPU, ``open_gpu`` says why in
``session.notice`` and returns the CPU path (fp16 runs as fp32 there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from modules.accelerators.cpu import OrtFeaturizer, open_cpu
from modules.accelerators.model_store import ModelStore
from modules.accelerators.session import FeaturizerSession

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
TRT_ENV = "EDGEFLEET_GPU_TENSORRT"  # "0" disables the TensorRT provider (CUDA only)


def gpu_status() -> tuple[bool, str]:
    """(usable, reason): a GPU-enabled onnxruntime build and an NVIDIA device are both needed."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if not any(p in available for p in GPU_PROVIDERS):
        return False, (
            f"onnxruntime {ort.__version__} has no CUDA/TensorRT execution provider "
            f"(available: {', '.join(available)}; install edgefleet[gpu] for onnxruntime-gpu)"
        )
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return False, "no NVIDIA GPU device found (/dev/nvidia0 is missing)"
    return True, f"GPU providers: {', '.join(p for p in available if p in GPU_PROVIDERS)}"


def gpu_providers(precision: str, cache_dir: Path) -> list[Any]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers: list[Any] = []
    if "TensorrtExecutionProvider" in available and os.environ.get(TRT_ENV, "1") != "0":
        cache_dir.mkdir(parents=True, exist_ok=True)
        providers.append(
            (
                "TensorrtExecutionProvider",
                {
                    "trt_fp16_enable": precision in ("fp16", "int8"),
                    "trt_int8_enable": precision == "int8",
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache_dir),
                    "trt_timing_cache_enable": True,
                },
            )
        )
    if "CUDAExecutionProvider" in available:
        providers.append(("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}))
    providers.append("CPUExecutionProvider")
    return providers


def open_gpu(
    store: ModelStore,
    model: str,
    precision: str = "fp16",
    threads: int | None = None,
    warmup: int = 3,
) -> FeaturizerSession:
    usable, reason = gpu_status()
    if not usable:
        cpu_precision = "fp32" if precision == "fp16" else precision
        notice = f"GPU path unavailable: {reason}; running on the CPU ({cpu_precision}) instead"
        return open_cpu(store, model, cpu_precision, threads=threads, warmup=warmup, notice=notice)
    path = store.featurizer_path(model, precision)
    return OrtFeaturizer(
        path,
        accelerator="gpu",
        model=model,
        precision=precision,
        providers=gpu_providers(precision, store.root / "trt-cache"),
        threads=threads,
        warmup=warmup,
    )
