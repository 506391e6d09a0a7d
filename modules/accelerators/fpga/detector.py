"""A detector whose networks run on the emulated card: the card holds every network of the
model (one bitstream), the host runs what lies between them (pyramid, crops, NMS, decoding:
``detection.py``) exactly as on the CPU. Each network call goes through the device socket;
``last_device_ms`` is the cycle model's time summed over the calls of one ``detect``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.accelerators.fpga.client import CardLink
from modules.accelerators.fpga.server import MAX_BATCH
from modules.accelerators.model_store import ModelStore

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from modules.accelerators.detection import Detection
    from modules.accelerators.detectors import Detector


class CardNetwork:
    """One network of the card in the shape of an onnxruntime session (``run``), so the CPU
    detectors' runners drive it unchanged. Batches above the card's limit go in chunks."""

    def __init__(self, link: CardLink, network: str, outputs: list[str]) -> None:
        self.link = link
        self.network = network
        self.outputs = outputs
        self.device_ms = 0.0  # emulated time of the calls since the last reset

    def get_providers(self) -> list[str]:
        return [f"fpga-emulator {self.link.path}"]

    def run(self, output_names: list[str] | None, input_feed: dict[str, Any]) -> list[Any]:
        import numpy as np

        (batch,) = input_feed.values()
        batch = np.asarray(batch, np.float32)
        chunks = []
        for at in range(0, len(batch), MAX_BATCH):
            result = self.link.infer(batch[at : at + MAX_BATCH], self.network)
            self.device_ms += result.device_ms
            chunks.append(result.outputs)
        names = output_names or self.outputs
        return [np.concatenate([chunk[name] for chunk in chunks]) for name in names]


class CardDetector:
    """``Detector`` over the card: the CPU runner of the model's architecture, fed by
    ``CardNetwork``s."""

    def __init__(self, inner: Detector, link: CardLink, networks: list[CardNetwork]) -> None:
        self.inner = inner
        self.link = link
        self.networks = networks
        self.engine = link.engine
        self.notice = link.notice
        self.last_device_ms: float | None = None
        self.last_macs = 0

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        for net in self.networks:
            net.device_ms = 0.0
        found = self.inner.detect(rgb)
        self.last_macs = self.inner.last_macs
        self.last_device_ms = sum(net.device_ms for net in self.networks)
        return found

    def close(self) -> None:
        self.inner.close()
        self.link.close()


def open_card_detector(
    store: ModelStore, model: str, precision: str, device: str | Path | None = None
) -> CardDetector:
    """Flash ``model``'s networks onto the card at ``device`` (started for this session when
    nothing serves it) and wrap its architecture's runner around them."""
    from modules.accelerators.decoded import DecodedDetector
    from modules.accelerators.mtcnn import Cascade
    from modules.accelerators.session import AcceleratorError
    from modules.accelerators.ssd import SingleShot

    manifest = store.get(model)
    settings = manifest.detector
    if settings is None:
        raise AcceleratorError(f"{model} is not a servable detector")
    link = CardLink(store, model, precision, device)
    try:
        described: dict[str, Any] = link.load_info.get("networks") or {}
        nets = {
            name: CardNetwork(link, name, list(info["outputs"])) for name, info in described.items()
        }
        inner: Detector
        if settings.architecture == "mtcnn":
            inner = Cascade(nets, settings, precision=precision)
        elif settings.architecture == "decoded":
            inner = DecodedDetector(
                nets["detector"],
                manifest.featurizer_input.name,
                settings,
                manifest.preprocessing,
                manifest.featurizer_macs,
                precision=precision,
            )
        else:
            inner = SingleShot(
                nets["ssd"], settings, manifest.preprocessing, manifest.featurizer_macs
            )
    except Exception:
        link.close()
        raise
    return CardDetector(inner, link, list(nets.values()))
