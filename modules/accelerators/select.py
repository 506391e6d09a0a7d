"""``open_accelerator``: one entry point for the cpu, gpu and fpga-emulator paths."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from modules.accelerators.model_store import ModelManifest, ModelStore
from modules.accelerators.session import AcceleratorError, FeaturizerSession

ACCELERATORS = ("auto", "cpu", "gpu", "fpga-emulator")
# The FPGA emulator's client module must expose
#   open_featurizer(store: ModelStore, model: str, precision: str, device: str | None, **kw)
#       -> FeaturizerSession   (featurize(); last_device_ms set after each call)
FPGA_CLIENT_MODULE = "modules.accelerators.fpga.client"


def open_accelerator(
    name: str,
    model: str,
    precision: str = "fp32",
    *,
    store: ModelStore | Path | str | None = None,
    threads: int | None = None,
    warmup: int = 3,
    device: str | None = None,
    **options: Any,
) -> FeaturizerSession:
    """Open the featurizer ``model`` at ``precision`` on accelerator ``name``.

    ``gpu`` without a GPU returns the CPU path with ``session.notice`` saying why. ``auto`` is
    ``gpu`` when a GPU is usable, else ``cpu`` (fp16 then runs as fp32).
    """
    store = store if isinstance(store, ModelStore) else ModelStore(store)
    if name == "auto":
        from modules.accelerators.gpu import gpu_status

        usable, _reason = gpu_status()
        if usable:
            name = "gpu"
        else:
            name = "cpu"
            precision = "fp32" if precision == "fp16" else precision
    if name == "cpu":
        from modules.accelerators.cpu import open_cpu

        return open_cpu(
            store, model, precision, threads=threads, warmup=warmup, engine=options.get("engine")
        )
    if name == "gpu":
        from modules.accelerators.gpu import open_gpu

        return open_gpu(store, model, precision, threads=threads, warmup=warmup)
    if name == "fpga-emulator":
        try:
            client = importlib.import_module(FPGA_CLIENT_MODULE)
        except ModuleNotFoundError as exc:
            raise AcceleratorError(
                "the fpga-emulator accelerator is not available in this build "
                f"({FPGA_CLIENT_MODULE} is missing)"
            ) from exc
        opener = getattr(client, "open_featurizer", None)
        if opener is None:
            raise AcceleratorError(f"{FPGA_CLIENT_MODULE} has no open_featurizer()")
        session: FeaturizerSession = opener(
            store, model, precision, device, threads=threads, **options
        )
        return session
    raise AcceleratorError(f"unknown accelerator {name!r}; choose one of {', '.join(ACCELERATORS)}")


def runnable_on(manifest: ModelManifest) -> list[str]:
    """The accelerators that can open ``manifest`` as stored (the GPU when one is present)."""
    from modules.accelerators.fpga.ops import unsupported_ops
    from modules.accelerators.fpga.server import supported_name

    found = ["cpu"] if {"fp32", "int8"} & set(manifest.featurizer) else []
    found.append("gpu")
    if manifest.origin == "imported":
        ops = [("", op) for op in manifest.source.get("ops", "").split(",") if op]
        if ops and not unsupported_ops(ops):
            found.append("fpga-emulator")
    elif supported_name(manifest.name) or manifest.kind == "detector":
        found.append("fpga-emulator")  # the built detectors use only the card's operators
    return found
