"""SSD on onnxruntime: one network over the image resized to its input, anchors decoded and
suppressed per class in pure code (``detection.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.accelerators import detection as det
from modules.accelerators.model_store import DetectorSettings, Preprocessing
from modules.accelerators.session import NetworkSession
from modules.accelerators.whole_image import open_session, squeezed_batch

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class SingleShot:
    """``detect(rgb)`` -> detections; ``last_macs`` is the network's cost per image."""

    last_device_ms: float | None = None  # set by the FPGA emulator's wrapper

    def __init__(
        self,
        path: Path | NetworkSession,
        settings: DetectorSettings,
        preprocessing: Preprocessing,
        macs: int,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        providers: list[Any] | None = None,
    ) -> None:
        from modules.accelerators.cpu import cpu_flags, int8_saturates

        self.settings = settings
        self.preprocessing = preprocessing
        self.last_macs = macs
        exact = precision == "int8" and int8_saturates(cpu_flags())
        self._session, self.engine = open_session(path, threads, providers, exact_int8=exact)
        self._anchors = det.ssd_anchors(preprocessing.crop)

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[det.Detection]:
        """The whole image squeezed to the input size (boxes are fractions of the image)."""
        batch = squeezed_batch(rgb, self.preprocessing)
        offsets, probabilities = self._session.run(None, {"images": batch})
        s = self.settings
        corners = det.ssd_decode(offsets[0], self._anchors)
        return det.class_detections(
            corners, probabilities[0], s.labels, s.thresholds[0], s.stage_nms, s.max_detections
        )

    def close(self) -> None:
        self._session = None
