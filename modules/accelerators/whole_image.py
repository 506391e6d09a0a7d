"""What the single-network detectors share (``ssd.py``, ``decoded.py``): an onnxruntime session
with a one-line error, and the whole image squeezed to the network's square input (so boxes as
fractions of the input are fractions of the image)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.accelerators.model_store import Preprocessing
from modules.accelerators.session import AcceleratorError, NetworkSession

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def open_session(
    path: Path | bytes | NetworkSession,
    threads: int | None,
    providers: list[Any] | None,
    *,
    exact_int8: bool = False,
) -> tuple[Any, str]:
    """(session, engine description) of the network at ``path`` (or serialized in ``path``;
    a network another device holds is used as it is)."""
    import onnxruntime as ort

    from modules.accelerators.cpu import session_options

    if not isinstance(path, Path | bytes):
        return path, path.get_providers()[0]

    name = path.name if isinstance(path, Path) else "the rewritten network"
    try:
        session = ort.InferenceSession(
            str(path) if isinstance(path, Path) else path,
            sess_options=session_options(threads, exact_int8=exact_int8),
            providers=providers or ["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise AcceleratorError(f"onnxruntime cannot load {name}: {exc}") from exc
    return session, f"onnxruntime {ort.__version__} {session.get_providers()[0]}"


def squeezed_batch(
    rgb: npt.NDArray[np.uint8], preprocessing: Preprocessing
) -> npt.NDArray[np.float32]:
    """HxWx3 RGB -> a batch of one at the input size, normalized as the model wants."""
    import cv2
    import numpy as np

    from modules.accelerators.preprocess import normalize

    size = preprocessing.crop
    height, width = rgb.shape[:2]
    interp = cv2.INTER_AREA if height > size or width > size else cv2.INTER_LINEAR
    scaled = np.asarray(cv2.resize(rgb, (size, size), interpolation=interp), np.uint8)
    return normalize(scaled, preprocessing)[None]
