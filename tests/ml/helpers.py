from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "composition.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_image(path: Path, rgb: npt.NDArray[np.uint8]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    return path
