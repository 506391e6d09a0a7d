"""Host cost of the BFP emulation: the rewritten graph against the fp32 graph, same process.

Runs both sessions interleaved on the same random input and reports wall time and per-thread CPU
time (single-threaded sessions: CPU time is robust to other load on a shared machine), at batch 1
and for a batch of 8 run image by image as the device does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from modules.accelerators.fpga.rewrite import rewrite
from modules.accelerators.model_store import ModelStore


def _session(model: Any, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if threads == 1:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def host_overhead(
    store: ModelStore,
    model: str,
    precision: str,
    iterations: int = 20,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    import numpy as np
    import onnx

    say = progress or (lambda _m: None)
    manifest = store.get(model)
    say("rewriting the fp32 featurizer")
    graph = onnx.load(str(store.featurizer_path(model, "fp32")))
    rewritten, report = rewrite(graph, precision)
    fp32, bfp = _session(graph, threads), _session(rewritten, threads)
    dims = [d if isinstance(d, int) else 1 for d in manifest.featurizer_input.shape]
    one = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    eight = np.repeat(one, 8, axis=0)
    name = manifest.featurizer_input.name

    def measure(run: Callable[[], Any]) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.thread_time()
        run()
        return (time.perf_counter() - wall) * 1e3, (time.thread_time() - cpu) * 1e3

    cases: dict[str, Callable[[], Any]] = {
        "fp32_batch1": lambda: fp32.run(None, {name: one}),
        "bfp_batch1": lambda: bfp.run(None, {name: one}),
        "fp32_batch8": lambda: fp32.run(None, {name: eight}),
        "bfp_batch8_image_by_image": lambda: [
            bfp.run(None, {name: eight[i : i + 1]}) for i in range(8)
        ],
    }
    for run in cases.values():  # warm-up
        run()
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for i in range(iterations):
        say(f"round {i + 1}/{iterations}")
        for key, run in cases.items():
            samples[key].append(measure(run))
    med = {
        k: (float(np.median([s[0] for s in v])), float(np.median([s[1] for s in v])))
        for k, v in samples.items()
    }

    def ratio(a: str, b: str, idx: int) -> float:
        return round(med[a][idx] / med[b][idx], 3)

    return {
        "model": model,
        "precision": precision,
        "threads": threads,
        "iterations": iterations,
        "quantized_layers": report.quantized_nodes,
        "ms": {k: {"wall_p50": round(w, 3), "cpu_p50": round(c, 3)} for k, (w, c) in med.items()},
        "host_vs_fp32_batch1": {
            "wall": ratio("bfp_batch1", "fp32_batch1", 0),
            "cpu": ratio("bfp_batch1", "fp32_batch1", 1),
        },
        "host_vs_fp32_batch8": {
            "wall": ratio("bfp_batch8_image_by_image", "fp32_batch8", 0),
            "cpu": ratio("bfp_batch8_image_by_image", "fp32_batch8", 1),
        },
    }
