"""What every accelerator path returns: a featurizer session (images batch -> feature vectors)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class AcceleratorError(Exception):
    """An accelerator cannot be opened or cannot run the requested model/precision."""


@runtime_checkable
class FeaturizerSession(Protocol):
    accelerator: str  # "cpu" | "gpu" | "fpga-emulator"
    model: str
    precision: str
    engine: str  # what actually runs it, e.g. "onnxruntime 1.31.1 CPUExecutionProvider"
    notice: str | None  # e.g. why the GPU path fell back to the CPU
    last_device_ms: float | None  # emulated device latency of the last call (FPGA emulator)

    def featurize(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """[N, 3, 224, 224] preprocessed float32 -> [N, feature_dim] float32."""
        ...

    def close(self) -> None: ...


class NetworkSession(Protocol):
    """The part of an onnxruntime ``InferenceSession`` the detectors call, so that a network
    held by another device (the FPGA emulator's card) can stand in for one."""

    def run(self, output_names: list[str] | None, input_feed: dict[str, Any]) -> list[Any]: ...

    def get_providers(self) -> list[str]: ...
