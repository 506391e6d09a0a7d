"""The featurizer for Azure ML entry scripts (``score.py``) in a packaged image.

    from modules.scoring.featurizer_api import Featurizer

    def init():
        global featurizer
        featurizer = Featurizer.from_env()     # the image's model on the FPGA emulator or the CPU

    def run(raw_data):
        image = base64.b64decode(json.loads(raw_data)["image"])
        return {"features": featurizer.features(image).tolist()[:8],
                "top": featurizer.classify(image, top_k=3)}

``from_env`` reads the same settings as the scoring server: the model store in
``EDGEFLEET_MODEL_DIR`` (else ``AZUREML_MODEL_DIR``), the model/head from the image, the FPGA
emulator when ``EDGEFLEET_FPGA_DEVICE`` is set (else ``SCORING_ACCELERATOR``, default cpu).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.scoring.scorer import Scorer, ScoringConfig

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

PACKAGE_JSON_ENV = "EDGEFLEET_PACKAGE_JSON"
DEFAULT_PACKAGE_JSON = "/opt/edgefleet/package.json"


def config_from_env(env: Mapping[str, str], image: Mapping[str, Any]) -> ScoringConfig:
    """The scorer settings: environment first, then the image's package.json, then defaults."""
    device = env.get("EDGEFLEET_FPGA_DEVICE") or None
    accelerator = env.get("SCORING_ACCELERATOR") or ("fpga-emulator" if device else "cpu")
    fallback = "bfp8" if accelerator == "fpga-emulator" else str(image.get("precision") or "fp32")
    return ScoringConfig(
        model=env.get("SCORING_MODEL") or str(image.get("model") or ScoringConfig.model),
        accelerator=accelerator,
        precision=env.get("SCORING_PRECISION") or fallback,
        device=device,
        model_dir=env.get("EDGEFLEET_MODEL_DIR") or env.get("AZUREML_MODEL_DIR") or None,
        head=env.get("SCORING_HEAD") or str(image.get("head") or "default"),
    )


class Featurizer:
    """One featurizer + head session; thread-safe (calls are serialized on the accelerator)."""

    def __init__(self, config: ScoringConfig) -> None:
        self._scorer = Scorer(config)
        self.config = config

    @classmethod
    def from_env(cls) -> Featurizer:
        path = Path(os.environ.get(PACKAGE_JSON_ENV) or DEFAULT_PACKAGE_JSON)
        image = json.loads(path.read_text()) if path.is_file() else {}
        return cls(config_from_env(os.environ, image))

    @property
    def labels(self) -> list[str]:
        return list(self._scorer.labels)

    def features(self, image: bytes) -> npt.NDArray[np.float32]:
        """Encoded image (JPEG/PNG) -> the pooled feature vector [feature_dim]."""
        return self._scorer.run(self._scorer.preprocess(image))["features"][0]

    def probabilities(self, image: bytes) -> npt.NDArray[np.float32]:
        """Encoded image -> the head's class probabilities [classes]."""
        return self._scorer.run(self._scorer.preprocess(image))["scores"][0]

    def classify(self, image: bytes, top_k: int = 5) -> list[dict[str, Any]]:
        """Encoded image -> ``[{class_id, label, score}]``, best first."""
        probs = self.probabilities(image)
        order = probs.argsort()[::-1][:top_k]
        labels = self._scorer.labels
        return [
            {"class_id": int(i), "label": labels[int(i)], "score": float(probs[i])} for i in order
        ]

    def close(self) -> None:
        self._scorer.close()
