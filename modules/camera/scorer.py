"""In-process scoring for the camera: the accelerators' featurizer session + classifier head, or
a detector (``SCORING_MODEL=face-detector``): boxes per frame."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from modules.accelerators.classifier_config import ClassifierConfig, open_classifier
from modules.camera.capture import Frame

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class FrameScorer(Protocol):
    kind: str  # "classifier": score() gives the top k; "detector": every detection

    def describe(self) -> dict[str, Any]:
        """What scores: model, accelerator, precision, engine (copied into every result)."""
        ...

    def prepare(self, bgr: npt.NDArray[np.uint8]) -> Any:
        """The model's input for a BGR frame (preprocessing; may run on another thread)."""
        ...

    def score(
        self, bgr: npt.NDArray[np.uint8], k: int, prepared: Any = None
    ) -> tuple[list[dict[str, Any]], float | None]:
        """A BGR frame (or its ``prepare`` result) -> (top-k ``{class_id, label, score}``, or
        every detection ``{box, class_id, label, score}`` best first; emulated device ms or
        None)."""
        ...

    def close(self) -> None: ...


class _Described:
    """``describe()`` from the scorer's config and its session (accelerator, engine)."""

    config: ClassifierConfig
    session: Any

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "accelerator": self.session.accelerator,
            "precision": self.config.precision,
            "engine": self.session.engine,
        }


class LocalScorer(_Described):
    """Used by one worker thread at a time (the camera pipeline has one)."""

    kind = "classifier"

    def __init__(self, config: ClassifierConfig) -> None:
        self.config = config
        self.classifier = open_classifier(config)
        self.session = self.classifier.featurizer

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


class LocalDetector(_Described):
    """A detector's cascade in process; ``k`` is ignored (every detection is sent)."""

    kind = "detector"

    def __init__(self, config: ClassifierConfig) -> None:
        from modules.accelerators.model_store import ModelStore
        from modules.scoring.detector import open_detector_session

        self.config = config
        self.detector, self.session = open_detector_session(
            ModelStore(config.model_dir), config.model, config.precision,
            config.accelerator, config.device, config.threads,
        )  # fmt: skip

    def prepare(self, bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        import cv2
        import numpy as np

        return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)

    def score(
        self, bgr: npt.NDArray[np.uint8], k: int, prepared: Any = None
    ) -> tuple[list[dict[str, Any]], float | None]:
        rgb = self.prepare(bgr) if prepared is None else prepared
        found = [d.as_json() for d in self.detector.detect(rgb)]
        return found, self.detector.last_device_ms

    def close(self) -> None:
        self.detector.close()


def open_frame_scorer(config: ClassifierConfig) -> LocalScorer | LocalDetector:
    """The scorer for ``config.model``: a classifier's or a detector's (by the store's kind)."""
    from modules.accelerators.model_store import ModelStore

    if ModelStore(config.model_dir).get(config.model).kind == "detector":
        return LocalDetector(config)
    return LocalScorer(config)


def timed_score(
    scorer: FrameScorer, frame: Frame, k: int
) -> tuple[list[dict[str, Any]], float | None, float]:
    """``score`` plus its wall time in ms (the worker's share: without a prepared input's
    preprocessing)."""
    start = time.perf_counter()
    top, device_ms = scorer.score(frame.image, k, frame.model_input)
    return top, device_ms, (time.perf_counter() - start) * 1000
