"""The serving core behind every protocol front end: admission, limits, inference, outputs.

Front ends (HTTP ``/score``, Open Inference Protocol v2, TF-Serving gRPC) only translate their
wire format into ``infer_image`` / ``infer_tensor`` calls and map the core's errors to their
status codes. The model is anything with the ``ScoringModel`` shape (``Scorer`` is one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from modules.scoring.keys import Keys

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

SCORES = "scores"  # [N, classes] float32 class probabilities; index = class id
FEATURES = "features"  # [N, feature_dim] float32 featurizer output
OUTPUTS = (SCORES, FEATURES)  # a classifier's outputs
DEFAULT_MAX_IMAGE_BYTES = 8 * 1024 * 1024
VARIABLE = -1  # a dimension that varies per answer (a detector's number of detections)


@dataclass(frozen=True)
class OutputSpec:
    """One output as the protocols describe it: Open Inference Protocol datatype (``FP32``,
    ``INT32``, ``BYTES``) and per-request shape with the batch dim (``VARIABLE`` where it
    varies)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def classifier_outputs(num_classes: int, feature_dim: int) -> tuple[OutputSpec, ...]:
    return (
        OutputSpec(SCORES, "FP32", (1, num_classes)),
        OutputSpec(FEATURES, "FP32", (1, feature_dim)),
    )


class ScoringModel(Protocol):
    """A featurizer + head (or any model) as the core drives it; ``Scorer`` is one.

    A model with outputs of its own (a detector, ``modules.scoring.detector``) also has
    ``output_specs`` (a sequence of ``OutputSpec``) and ``default_outputs`` (the names answered
    when a request names none); its empty ``input_shape`` means it takes encoded images only.
    """

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> Sequence[str]: ...  # index = class id

    @property
    def input_shape(self) -> tuple[int, ...]: ...  # one image: (3, H, W) or (H, W, 3)

    @property
    def feature_dim(self) -> int: ...

    def preprocess(self, image: bytes) -> npt.NDArray[Any]: ...

    def run(self, batch: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]: ...

    def score(self, image: bytes) -> dict[str, Any]:
        """The ``POST /score`` answer (top-k classes, model, latency); ImageError if undecodable."""
        ...


class ServingError(Exception):
    """A request the core refuses; the front end maps the subclass to its status code."""


class InvalidInput(ServingError):
    """Bad image, dtype, shape or output name (HTTP 400, gRPC INVALID_ARGUMENT)."""


class TooLarge(InvalidInput):
    """The image is over the byte cap (HTTP 413, gRPC INVALID_ARGUMENT)."""


class Overloaded(ServingError):
    """Every worker is busy and the queue is full (HTTP 429, gRPC RESOURCE_EXHAUSTED)."""


class Unavailable(ServingError):
    """The accelerator cannot run the request now, e.g. the FPGA device is restarting (HTTP 503,
    gRPC UNAVAILABLE); the featurizer session reconnects by itself, so a later call may work."""


@contextmanager
def accelerator_errors() -> Iterator[None]:
    """An accelerator that fails at run time (its device gone or restarting) -> Unavailable."""
    from modules.accelerators.session import AcceleratorError

    try:
        yield
    except (AcceleratorError, ConnectionError) as exc:
        raise Unavailable(f"the accelerator is unavailable: {exc}") from None


@dataclass(frozen=True)
class Limits:
    workers: int = 1  # requests computed at once (one featurizer session serializes anyway)
    queue: int = 8  # requests admitted to wait beyond those; more get Overloaded
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES

    @property
    def admitted(self) -> int:
        return self.workers + self.queue


class ServingCore:
    def __init__(self, model: ScoringModel, keys: Keys, limits: Limits | None = None) -> None:
        self.model = model
        self.keys = keys
        self.limits = limits or Limits()
        self._admission = threading.BoundedSemaphore(self.limits.admitted)
        self._workers = threading.BoundedSemaphore(self.limits.workers)
        self.ready = threading.Event()
        self.ready.set()
        self._closing = threading.Event()
        specs = getattr(model, "output_specs", None)
        if specs is None:
            specs = classifier_outputs(len(model.labels), model.feature_dim)
        self.outputs: dict[str, OutputSpec] = {spec.name: spec for spec in specs}
        self.default_outputs: list[str] = list(getattr(model, "default_outputs", [SCORES]))

    @property
    def num_classes(self) -> int:
        return len(self.model.labels)

    def output_shape(self, name: str) -> list[int]:
        """Per-request shape with the batch dim (``VARIABLE`` where it varies)."""
        return list(self.outputs[name].shape)

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one place of the bounded pool for a request, or raise Overloaded at once."""
        if self._closing.is_set():
            raise Overloaded("shutting down")
        if not self._admission.acquire(blocking=False):
            raise Overloaded(
                f"busy: {self.limits.workers} request(s) running and {self.limits.queue} "
                "waiting; retry later"
            )
        try:
            with self._workers:
                yield
        finally:
            self._admission.release()

    def drain(self, timeout: float) -> bool:
        """Refuse new requests and wait up to ``timeout`` s for those admitted to finish."""
        self._closing.set()
        self.ready.clear()
        deadline = time.monotonic() + timeout
        taken = 0
        while taken < self.limits.admitted:
            if not self._admission.acquire(timeout=max(0.0, deadline - time.monotonic())):
                break
            taken += 1
        for _ in range(taken):
            self._admission.release()
        return taken == self.limits.admitted

    def check_image_size(self, size: int) -> None:
        if size > self.limits.max_image_bytes:
            raise TooLarge(
                f"image is {size} bytes; the limit is {self.limits.max_image_bytes} bytes"
            )

    def infer_image(self, image: bytes, outputs: Sequence[str] = ()) -> dict[str, npt.NDArray[Any]]:
        """Encoded JPEG/PNG bytes -> the requested outputs (all when none named), batch of one."""
        from modules.accelerators.preprocess import ImageError

        wanted = self.select_outputs(outputs)
        if not image:
            raise InvalidInput("the image is empty")
        self.check_image_size(len(image))
        with self.admit():
            try:
                batch = self.model.preprocess(bytes(image))
            except ImageError as exc:
                raise InvalidInput(str(exc)) from None
            with accelerator_errors():
                return self._pick(self.model.run(batch), wanted)

    def score(self, image: bytes) -> dict[str, Any]:
        """``POST /score``: the model's top-k JSON for one encoded image."""
        from modules.accelerators.preprocess import ImageError

        if not image:
            raise InvalidInput("the image is empty")
        self.check_image_size(len(image))
        with self.admit():
            try:
                with accelerator_errors():
                    return self.model.score(bytes(image))
            except ImageError as exc:
                raise InvalidInput(str(exc)) from None

    def infer_tensor(
        self, tensor: npt.NDArray[Any], outputs: Sequence[str] = ()
    ) -> dict[str, npt.NDArray[Any]]:
        """A preprocessed float32 batch of one, [1, C, H, W] or [1, H, W, C] -> outputs."""
        import numpy as np

        wanted = self.select_outputs(outputs)
        batch = self.layout_tensor(np.asarray(tensor))
        with self.admit(), accelerator_errors():
            return self._pick(self.model.run(batch), wanted)

    def layout_tensor(self, tensor: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Check a tensor input's dtype and shape; transpose it into the model's layout."""
        import numpy as np

        own = tuple(self.model.input_shape)
        if not own:
            raise InvalidInput(
                f"{self.model.name} takes an encoded image (BYTES / DT_STRING), not a tensor"
            )
        if tensor.dtype != np.float32:
            raise InvalidInput(f"tensor input must be float32, got {tensor.dtype}")
        channels_first = own[0] <= own[-1]  # (C, H, W) with C in 1, 3; images are wider
        channels = own[0] if channels_first else own[-1]
        other = (own[1], own[2], channels) if channels_first else (channels, own[0], own[1])
        shape = tuple(tensor.shape)
        if shape == (1, *own):
            out = tensor
        elif shape == (1, *other):
            out = tensor.transpose(0, 3, 1, 2) if channels_first else tensor.transpose(0, 2, 3, 1)
        else:
            raise InvalidInput(
                f"tensor input must have shape {[1, *own]} or {[1, *other]}, got {list(shape)}"
            )
        if not np.isfinite(out).all():
            raise InvalidInput("tensor input has NaN or infinite values")
        return np.ascontiguousarray(out, dtype=np.float32)

    def select_outputs(self, names: Sequence[str]) -> list[str]:
        unknown = [n for n in names if n not in self.outputs]
        if unknown:
            raise InvalidInput(
                f"unknown output {unknown[0]!r}; this model has {', '.join(self.outputs)}"
            )
        return list(dict.fromkeys(names)) or list(self.default_outputs)

    def top_k(self, scores: npt.NDArray[np.float32], k: int) -> list[dict[str, Any]]:
        import numpy as np

        row = scores[0]
        order = np.argsort(-row, kind="stable")[: max(1, k)]
        labels = self.model.labels
        return [
            {"class_id": int(i), "label": labels[int(i)], "score": float(row[i])} for i in order
        ]

    @staticmethod
    def _pick(
        results: dict[str, npt.NDArray[Any]], wanted: list[str]
    ) -> dict[str, npt.NDArray[Any]]:
        return {name: results[name] for name in wanted}
