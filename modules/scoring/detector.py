"""A detector behind the serving core: encoded image in, boxes / scores / classes / labels out.

The same detections reach every protocol: ``POST /score`` as JSON (``detections``), the Open
Inference Protocol and TF-Serving ``Predict`` as the tensors of ``detection.py`` (docs/serving.md).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modules.accelerators import detection as det
from modules.scoring.core import VARIABLE, OutputSpec

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from modules.accelerators.detectors import Detector
    from modules.accelerators.model_store import ModelManifest, ModelStore
    from modules.scoring.scorer import Scorer, ScoringConfig

DETECTOR_OUTPUTS = (
    OutputSpec(det.BOXES, "FP32", (1, VARIABLE, 4)),
    OutputSpec(det.DETECTION_SCORES, "FP32", (1, VARIABLE)),
    OutputSpec(det.CLASSES, "INT32", (1, VARIABLE)),
    OutputSpec(det.LABELS, "BYTES", (1, VARIABLE)),
)
ACCELERATORS = ("cpu", "gpu")


@dataclass
class DetectorSession:
    """What the banner and the module log read of an accelerator session."""

    accelerator: str
    engine: str
    notice: str | None = None
    last_device_ms: float | None = None


def providers_for(accelerator: str) -> tuple[list[str], str, str | None]:
    """onnxruntime providers for ``accelerator`` -> (providers, accelerator used, notice)."""
    if accelerator not in ACCELERATORS:
        raise ValueError(f"detectors run on {' or '.join(ACCELERATORS)}, not {accelerator}")
    if accelerator == "gpu":
        from modules.accelerators.gpu import gpu_status

        usable, reason = gpu_status()
        if usable:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"], "gpu", None
        return ["CPUExecutionProvider"], "cpu", f"no usable GPU ({reason}); running on the CPU"
    return ["CPUExecutionProvider"], "cpu", None


def fpga_refusal(store: ModelStore, manifest: ModelManifest) -> str | None:
    """Why the emulated card cannot run this detector: the operators of its fp32 networks
    outside the card's set (None when it runs them all)."""
    import onnx

    from modules.accelerators.fpga.networks import fp32_graphs
    from modules.accelerators.fpga.ops import unsupported_ops

    ops = {
        (node.domain, node.op_type)
        for path in fp32_graphs(store, manifest)
        for node in onnx.load(str(path)).graph.node
    }
    bad = unsupported_ops(ops)
    if not bad:
        return None
    return (
        f"{manifest.name}'s networks use operators the emulated card does not run: "
        f"{', '.join(bad)} (docs/models.md lists its set); run it on {' or '.join(ACCELERATORS)} "
        "(--precision bfp8 there runs the card's numerics on the CPU)"
    )


def open_detector_session(
    store: ModelStore,
    model: str,
    precision: str,
    accelerator: str,
    device: str | None = None,
    threads: int | None = None,
) -> tuple[Detector, DetectorSession]:
    """The detector on ``accelerator`` (its networks on the emulated card at ``device`` for
    ``fpga-emulator``, else onnxruntime's providers for it) and what the banner reads of it."""
    from modules.accelerators.detectors import open_detector

    if accelerator == "fpga-emulator":
        found = open_detector(store, model, precision, accelerator=accelerator, device=device)
        notice = getattr(found, "notice", None)
        return found, DetectorSession(accelerator, found.engine, notice)
    providers, used, notice = providers_for(accelerator)
    found = open_detector(store, model, precision, threads=threads, providers=providers)
    return found, DetectorSession(used, found.engine, notice)


class DetectorScorer:
    """Thread-safe (one cascade, calls serialized), like ``Scorer``."""

    output_specs = DETECTOR_OUTPUTS
    default_outputs = tuple(spec.name for spec in DETECTOR_OUTPUTS)
    input_shape: tuple[int, ...] = ()  # encoded images only: any size
    feature_dim = 0

    def __init__(self, config: ScoringConfig) -> None:
        from modules.accelerators.model_store import ModelStore

        self.config = config
        store = ModelStore(config.model_dir)
        manifest = store.get(config.model)
        if manifest.detector is None:
            raise ValueError(
                f"{config.model} was stored without its detection outputs: import it again "
                "with this version of edgefleet (--kind detector) to serve it"
            )
        if config.accelerator == "fpga-emulator":
            refused = fpga_refusal(store, manifest)
            if refused:
                raise ValueError(refused)
        self.detector, self.session = open_detector_session(
            store, config.model, config.precision, config.accelerator, config.device
        )
        self.name = manifest.name
        self.version = manifest.version
        self.flagged = config.precision in manifest.flagged
        self.labels: list[str] = list(manifest.detector.labels)
        self._lock = threading.Lock()

    def preprocess(self, image: bytes) -> npt.NDArray[np.uint8]:
        """Encoded image -> RGB pixels (raises ImageError); the cascade scales them itself."""
        from modules.accelerators.preprocess import decode_rgb

        return decode_rgb(image)

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[det.Detection]:
        with self._lock:
            return self.detector.detect(rgb)

    def run(self, batch: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]:
        """RGB pixels of one image -> the detection tensors (batch of one)."""
        return det.detections_to_tensors(self.detect(batch))

    def score(self, image: bytes) -> dict[str, Any]:
        """JPEG/PNG bytes -> ``{"detections": [{box, class_id, label, score}], ...}``."""
        start = time.perf_counter()
        rgb = self.preprocess(image)
        with self._lock:
            found = self.detector.detect(rgb)
            device_ms = self.detector.last_device_ms
            self.session.last_device_ms = device_ms
        return {
            "model": self.config.model,
            "accelerator": self.session.accelerator,
            "precision": self.config.precision,
            "engine": self.session.engine,
            "imageSize": {"width": int(rgb.shape[1]), "height": int(rgb.shape[0])},
            "detections": [d.as_json() for d in found],
            "latencyMs": round((time.perf_counter() - start) * 1000, 3),
            "deviceMs": device_ms if device_ms is None else round(device_ms, 4),
        }

    def close(self) -> None:
        self.detector.close()


def open_scoring_model(config: ScoringConfig) -> Scorer | DetectorScorer:
    """The served model of ``config``: a ``Scorer`` (classifier) or a ``DetectorScorer``."""
    from modules.accelerators.model_store import ModelStore
    from modules.scoring.scorer import Scorer

    if ModelStore(config.model_dir).get(config.model).kind == "detector":
        return DetectorScorer(config)
    return Scorer(config)
