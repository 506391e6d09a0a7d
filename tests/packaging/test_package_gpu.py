"""The GPU image variant (``models package --accelerator gpu``), its pure parts only: no GPU
and no onnxruntime-gpu build here. The wheels chosen, the CUDA library path, the Dockerfile and
launch settings, the fp32 fallback artifact and the snippet's DeviceRequests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modules.accelerators.model_store import ModelStore
from modules.packaging.context import (
    ImageSpec,
    PackageError,
    library_dirs,
    render_dockerfile,
    runtime_dockerfile,
    runtime_tag,
    trimmed_manifest,
)
from modules.packaging.entrypoint import serve_args
from modules.packaging.requirements import runtime_requirements
from modules.packaging.runtime_image import runtime_layers
from modules.packaging.snippet import manifest_snippet
from modules.scoring.featurizer_api import config_from_env


def test_gpu_runtime_swaps_onnxruntime_and_finds_the_cuda_libraries(tmp_path: Path) -> None:
    gpu = runtime_requirements("gpu")
    assert "onnxruntime-gpu[cuda,cudnn]>=1.21" in gpu
    assert not any(r.startswith("onnxruntime>") for r in gpu)
    assert runtime_requirements("cpu") != gpu
    (cpu_layer,) = runtime_layers("cpu", False)
    gpu_layer, _azml = runtime_layers("gpu", True)
    assert runtime_tag("b", gpu_layer).startswith("edgefleet-runtime:gpu-")
    assert runtime_tag("b", gpu_layer) != runtime_tag("b", cpu_layer)
    with pytest.raises(PackageError, match="unknown image accelerator 'tpu'"):
        runtime_requirements("tpu")
    for lib in ("nvidia/cudnn/lib", "nvidia/cu13/lib", "numpy/lib"):
        (tmp_path / lib).mkdir(parents=True)
    assert library_dirs(tmp_path) == ["nvidia/cu13/lib", "nvidia/cudnn/lib"]
    text = runtime_dockerfile("edgefleet-base:x", "site", library_dirs(tmp_path))
    assert text.splitlines() == [
        "FROM edgefleet-base:x",
        "COPY site /opt/edgefleet/site",
        "ENV LD_LIBRARY_PATH=/opt/edgefleet/site/nvidia/cu13/lib"
        ":/opt/edgefleet/site/nvidia/cudnn/lib",
    ]
    assert "ENV" not in runtime_dockerfile("edgefleet-base:x", "site", [])


def test_gpu_snippet_requests_every_nvidia_gpu() -> None:
    snippet = manifest_snippet("reg.example:5000/score-gpu:1", "reg.example:5000", None, gpu=True)
    module = snippet["modules"]["scoring"]
    options = json.loads(module["settings"]["createOptions"])
    assert options["HostConfig"]["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}
    ]
    assert "Binds" not in options["HostConfig"] and "EDGEFLEET_FPGA_DEVICE" not in module["env"]
    cpu = json.loads(
        manifest_snippet("x:1", "", None)["modules"]["scoring"]["settings"]["createOptions"]
    )
    assert "DeviceRequests" not in cpu["HostConfig"]


def test_gpu_image_serves_on_the_gpu_with_cuda_only() -> None:
    spec = ImageSpec("m1", "default", "fp16", accelerator="gpu")
    text = render_dockerfile("edgefleet-runtime:gpu-x", spec)
    assert "ENV SCORING_ACCELERATOR=gpu\n" in text and "ENV EDGEFLEET_GPU_TENSORRT=0\n" in text
    assert "ENV PYTHONPATH=/opt/edgefleet/site:/opt/edgefleet/app\n" in text
    assert "SCORING_ACCELERATOR" not in render_dockerfile("r", ImageSpec("m1", "default", "fp32"))
    env = {"SCORING_ACCELERATOR": "gpu"}
    args = serve_args({"model": "m1", "head": "default", "precision": "fp16"}, env)
    assert args[args.index("--accelerator") + 1] == "gpu"
    assert args[args.index("--precision") + 1] == "fp16"
    cfg = config_from_env(env, {"model": "m1", "precision": "fp16"})  # score.py's featurizer
    assert (cfg.accelerator, cfg.precision) == ("gpu", "fp16")


def test_gpu_fp16_image_also_ships_fp32_for_the_cpu_fallback(model_dir: Path) -> None:
    stored = ModelStore(model_dir).get("efficientnet-lite0")
    fp32 = stored.featurizer["fp32"]
    manifest = stored.model_copy(update={"featurizer": {**stored.featurizer, "fp16": fp32}})
    gpu = trimmed_manifest(manifest, "fp16", "default", "gpu")
    assert sorted(gpu.featurizer) == ["fp16", "fp32"]
    assert list(trimmed_manifest(manifest, "fp16", "default", "cpu").featurizer) == ["fp16"]
    assert list(trimmed_manifest(manifest, "fp32", "default", "gpu").featurizer) == ["fp32"]
    with pytest.raises(PackageError, match="has no int4 featurizer"):
        trimmed_manifest(manifest, "int4", "default", "gpu")
