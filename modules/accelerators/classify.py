"""Featurizer session + classifier head + labels: images in, top-k classes out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modules.accelerators.cpu import session_options
from modules.accelerators.model_store import ModelStore, head_labels
from modules.accelerators.preprocess import preprocess_batch
from modules.accelerators.session import FeaturizerSession

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from modules.accelerators.preprocess import ImageSource


class ImageClassifier:
    def __init__(
        self, featurizer: FeaturizerSession, store: ModelStore, head: str = "default"
    ) -> None:
        import onnxruntime as ort

        self.featurizer = featurizer
        self.manifest = store.get(featurizer.model)
        self.head_name = head
        path = store.head_path(featurizer.model, head)
        entry = self.manifest.heads[head]
        self.labels = head_labels(entry)
        self._head = ort.InferenceSession(
            str(path), sess_options=session_options(1), providers=["CPUExecutionProvider"]
        )
        self._head_input = entry.input.name

    def preprocess(self, images: Sequence[ImageSource]) -> npt.NDArray[np.float32]:
        return preprocess_batch(images, self.manifest.preprocessing)

    def head(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = self._head.run(None, {self._head_input: features})[0]
        return out

    def probabilities(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return self.head(self.featurizer.featurize(batch))

    def top_k(self, probs: npt.NDArray[np.float32], k: int = 5) -> list[list[dict[str, Any]]]:
        import numpy as np

        k = min(k, probs.shape[1])
        results = []
        for row in probs:
            order = np.argsort(-row, kind="stable")[:k]
            results.append(
                [
                    {"class_id": int(i), "label": self.labels[int(i)], "score": float(row[i])}
                    for i in order
                ]
            )
        return results

    def classify(self, images: Sequence[ImageSource], k: int = 5) -> list[list[dict[str, Any]]]:
        return self.top_k(self.probabilities(self.preprocess(images)), k)
