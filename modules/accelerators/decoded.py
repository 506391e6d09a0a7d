"""An imported detector whose graph ends in decoded detections, on onnxruntime: the image
squeezed to the input size, the graph run, its outputs read by ``decoded_outputs.decode``.

Its networks: the stored fp32 graph, the int8 one ``models quantize`` stored, or a BFP format
(``bfp8``, ``msfp9``) derived from fp32 at load by the FPGA emulator's rewrite (``fpga.rewrite``,
with the conv input means ``models quantize`` embedded), run on the CPU with the card's numerics.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.accelerators import decoded_outputs
from modules.accelerators.bfp_at_load import is_bfp, rewritten
from modules.accelerators.model_store import (
    DetectorSettings,
    ModelManifest,
    ModelStore,
    Preprocessing,
)
from modules.accelerators.session import AcceleratorError, NetworkSession
from modules.accelerators.whole_image import open_session, squeezed_batch

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from modules.accelerators.detection import Detection


def network(store: ModelStore, manifest: ModelManifest, precision: str) -> Path | bytes:
    """The stored graph of ``precision``, or fp32 rewritten to a BFP format (serialized)."""
    if precision in manifest.featurizer:
        return store.resolve(manifest.featurizer[precision])
    if not is_bfp(precision):
        raise AcceleratorError(
            f"{manifest.name} has no {precision} network (available: "
            f"{', '.join(sorted(manifest.featurizer))}, or a BFP format such as bfp8)"
        )
    return rewritten(store.resolve(manifest.featurizer["fp32"]), precision, manifest.name)


class DecodedDetector:
    """``detect(rgb)`` -> detections (boxes are fractions of the whole image)."""

    last_device_ms: float | None = None  # set by the FPGA emulator's wrapper

    def __init__(
        self,
        path: Path | bytes | NetworkSession,
        input_name: str,
        settings: DetectorSettings,
        preprocessing: Preprocessing,
        macs: int,
        *,
        threads: int | None = None,
        providers: list[Any] | None = None,
        precision: str = "fp32",
    ) -> None:
        from modules.accelerators.cpu import cpu_flags, int8_saturates

        self.settings = settings
        self.preprocessing = preprocessing
        self.last_macs = macs
        self._input = input_name
        exact = precision == "int8" and int8_saturates(cpu_flags())
        self._session, self.engine = open_session(path, threads, providers, exact_int8=exact)
        if is_bfp(precision):
            self.engine += f" (the FPGA emulator's {precision} numerics)"
        s = settings
        self._outputs = [s.boxes_output, s.scores_output] + (
            [s.classes_output] if s.classes_output else []
        )

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[Detection]:
        batch = squeezed_batch(rgb, self.preprocessing)
        try:
            found = self._session.run(self._outputs, {self._input: batch})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise AcceleratorError(f"the detector failed on this image: {exc}") from exc
        s = self.settings
        try:
            return decoded_outputs.decode(
                found[0],
                found[1],
                found[2] if s.classes_output else None,
                box_format=s.box_format,
                box_units=s.box_units,
                height=self.preprocessing.crop,
                width=self.preprocessing.crop,
                labels=s.labels,
                threshold=s.thresholds[0],
                max_detections=s.max_detections,
            )
        except ValueError as exc:
            raise AcceleratorError(f"the detector's outputs do not fit together: {exc}") from exc

    def close(self) -> None:
        self._session = None
