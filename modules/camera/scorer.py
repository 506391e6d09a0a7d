"""In-process scoring for the camera: the accelerators' featurizer session + classifier head."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from modules.accelerators.classifier_config import ClassifierConfig, open_classifier
from modules.camera.capture import Frame

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class FrameScorer(Protocol):
    def describe(self) -> dict[str, Any]:
        """What scores: model, accelerator, precision, engine (copied into every result)."""
        ...

    def prepare(self, bgr: npt.NDArray[np.uint8]) -> Any:
        """The model's input for a BGR frame (preprocessing; may run on another thread)."""
        ...

    def score(
        self, bgr: npt.NDArray[np.uint8], k: int, prepared: Any = None
    ) -> tuple[list[dict[str, Any]], float | None]:
        """A BGR frame (or its ``prepare`` result) -> (top-k ``{class_id, label, score}``,
        emulated device ms or None)."""
        ...

    def close(self) -> None: ...


class LocalScorer:
    """Used by one worker thread at a time (the camera pipeline has one)."""

    def __init__(self, config: ClassifierConfig) -> None:
        self.config = config
        self.classifier = open_classifier(config)
        self.session = self.classifier.featurizer

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "accelerator": self.session.accelerator,
            "precision": self.config.precision,
            "engine": self.session.engine,
        }

    def prepare(self, bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        import cv2

        return self.classifier.preprocess([cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)])

    def score(
        self, bgr: npt.NDArray[np.uint8], k: int, prepared: Any = None
    ) -> tuple[list[dict[str, Any]], float | None]:
        batch = self.prepare(bgr) if prepared is None else prepared
        (top,) = self.classifier.top_k(self.classifier.probabilities(batch), k)
        return top, self.session.last_device_ms

    def close(self) -> None:
        self.session.close()


def timed_score(
    scorer: FrameScorer, frame: Frame, k: int
) -> tuple[list[dict[str, Any]], float | None, float]:
    """``score`` plus its wall time in ms (the worker's share: without a prepared input's
    preprocessing)."""
    start = time.perf_counter()
    top, device_ms = scorer.score(frame.image, k, frame.model_input)
    return top, device_ms, (time.perf_counter() - start) * 1000
