"""Images in, top-k ImageNet classes out: preprocess + featurizer (cpu/gpu/fpga-emulator) + head."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

DEFAULT_MODEL = "efficientnet-lite0"


@dataclass(frozen=True)
class ScoringConfig:
    model: str = DEFAULT_MODEL
    accelerator: str = "cpu"
    precision: str = "fp32"
    device: str | None = None  # FPGA emulator device path or name
    model_dir: str | None = None  # default: the model store's default root
    head: str = "default"
    top_k: int = 5

    @classmethod
    def from_env(cls) -> ScoringConfig:
        """The classifier's settings (``ClassifierConfig.from_env``) and ``SCORING_TOP_K``."""
        from modules.accelerators.classifier_config import ClassifierConfig

        base = ClassifierConfig.from_env()
        return cls(
            model=base.model,
            accelerator=base.accelerator,
            precision=base.precision,
            device=base.device,
            model_dir=base.model_dir,
            head=base.head,
            top_k=int(os.environ.get("SCORING_TOP_K", "5")),
        )


class Scorer:
    """Thread-safe: the message handler and the network front ends share one session.

    What the serving core needs of a model (``modules.scoring.core.ScoringModel``): ``name``,
    ``labels``, ``input_shape``, ``feature_dim``, ``preprocess(image)`` and ``run(batch)``.
    """

    def __init__(self, config: ScoringConfig) -> None:
        from modules.accelerators.classify import ImageClassifier
        from modules.accelerators.model_store import ModelStore
        from modules.accelerators.select import open_accelerator

        self.config = config
        store = ModelStore(config.model_dir)
        kind = store.get(config.model).kind
        if kind != "classifier":
            raise ValueError(f"{config.model} is a {kind}: only classifiers are served")
        self.session = open_accelerator(
            config.accelerator,
            config.model,
            config.precision,
            store=store,
            device=config.device,
        )
        self.classifier = ImageClassifier(self.session, store, config.head)
        self._lock = threading.Lock()
        manifest = self.classifier.manifest
        self.name = manifest.name  # NAME:VERSION selects what is served; protocols see NAME
        self.version = manifest.version
        self.flagged = config.precision in manifest.flagged
        self.labels: list[str] = self.classifier.labels
        spec = self.classifier.manifest.preprocessing
        crop, channels = spec.crop, spec.channels
        self.input_shape = (
            (channels, crop, crop) if spec.layout == "NCHW" else (crop, crop, channels)
        )
        self.feature_dim = self.classifier.manifest.feature_dim

    def preprocess(self, image: bytes) -> npt.NDArray[np.float32]:
        """Encoded image -> the featurizer's input batch of one (raises ImageError)."""
        return self.classifier.preprocess([image])

    def run(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        """Preprocessed batch -> ``features`` [N, feature_dim] and ``scores`` [N, classes]."""
        with self._lock:
            features = self.classifier.featurizer.featurize(batch)
            scores = self.classifier.head(features)
        return {"scores": scores, "features": features}

    def score(self, image: bytes) -> dict[str, Any]:
        """JPEG/PNG bytes -> ``{"top5": [{class_id, label, score}], "latencyMs", ...}``."""
        start = time.perf_counter()
        batch = self.preprocess(image)
        with self._lock:
            probs = self.classifier.probabilities(batch)
            device_ms = self.session.last_device_ms
        (top,) = self.classifier.top_k(probs, self.config.top_k)
        return {
            "model": self.config.model,
            "accelerator": self.session.accelerator,
            "precision": self.config.precision,
            "engine": self.session.engine,
            f"top{self.config.top_k}": top,
            "latencyMs": round((time.perf_counter() - start) * 1000, 3),
            "deviceMs": round(device_ms, 3) if device_ms is not None else None,
        }

    def close(self) -> None:
        self.session.close()
