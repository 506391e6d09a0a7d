"""``open_detector``: a built detector of the model store, by its architecture."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from modules.accelerators.model_store import ModelStore
from modules.accelerators.session import AcceleratorError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from modules.accelerators.detection import Detection


class Detector(Protocol):
    engine: str
    last_macs: int  # multiply-accumulates of the last ``detect``
    last_device_ms: float | None  # the emulated card's time for the last ``detect``

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[Detection]: ...

    def close(self) -> None: ...


def open_detector(
    store: ModelStore,
    model: str,
    precision: str = "fp32",
    threads: int | None = None,
    providers: list[Any] | None = None,
    *,
    accelerator: str = "cpu",
    device: str | None = None,
) -> Detector:
    """MTCNN's cascade (``mtcnn.py``), a single-shot network (``ssd.py``) or an imported graph
    that ends in detections (``decoded.py``); on ``fpga-emulator`` its networks run on the
    emulated card at ``device`` (``fpga/detector.py``), otherwise on onnxruntime."""
    from modules.accelerators.decoded import DecodedDetector, network
    from modules.accelerators.mtcnn import open_cascade
    from modules.accelerators.ssd import SingleShot

    manifest = store.get(model)
    if manifest.detector is None:
        raise AcceleratorError(
            f"{model} is not a servable detector (import it again with --kind detector)"
        )
    if accelerator == "fpga-emulator":
        from modules.accelerators.fpga.detector import open_card_detector

        return open_card_detector(store, model, precision, device)
    if manifest.detector.architecture == "mtcnn":
        return open_cascade(store, model, precision, threads, providers)
    if manifest.detector.architecture == "decoded":
        return DecodedDetector(
            network(store, manifest, precision),
            manifest.featurizer_input.name,
            manifest.detector,
            manifest.preprocessing,
            manifest.featurizer_macs,
            threads=threads,
            providers=providers,
            precision=precision,
        )
    variants = manifest.stages.get("ssd", {})
    if precision not in variants:
        raise AcceleratorError(
            f"{model} has no {precision} network (available: {', '.join(sorted(variants))})"
        )
    return SingleShot(
        store.resolve(variants[precision]),
        manifest.detector,
        manifest.preprocessing,
        manifest.featurizer_macs,
        precision=precision,
        threads=threads,
        providers=providers,
    )
