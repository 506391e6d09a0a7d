"""Transfer learning: train a softmax classifier head on featurizer outputs, store it as ONNX."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modules.accelerators.classify import ImageClassifier
from modules.accelerators.model_store import Head, ModelStore, StoreError, TensorSpec
from modules.accelerators.session import FeaturizerSession

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


@dataclass
class TrainResult:
    head: str
    labels: list[str]
    images: int
    train_accuracy: float
    epochs: int
    heldout_accuracy: float | None = None  # on images kept out of training (None: none kept)
    heldout_images: int = 0


def scan_dataset(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """DIR/<label>/*.jpg -> (paths, label indices, sorted label names)."""
    if not root.is_dir():
        raise StoreError(f"{root} is not a directory (expected DIR/<label>/*.jpg)")
    labels = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths: list[Path] = []
    targets: list[int] = []
    for index, label in enumerate(labels):
        files = sorted(f for f in (root / label).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        targets += [index] * len(files)
    used = sorted({labels[t] for t in targets})
    if len(used) < 2:
        raise StoreError(f"{root} needs images in at least two label folders (found {used})")
    return paths, targets, labels


def holdout_split(targets: list[int], fraction: float) -> tuple[list[int], list[int]]:
    """Indices (train, held out): about ``fraction`` of every class, spread over its images
    (deterministic); a class keeps at least one training image."""
    if not 0 <= fraction < 1:
        raise ValueError(f"--holdout must be in [0, 1), got {fraction}")
    train: list[int] = []
    held: list[int] = []
    for label in sorted(set(targets)):
        members = [i for i, t in enumerate(targets) if t == label]
        count = min(len(members) - 1, round(len(members) * fraction))
        picked = {members[int((k + 0.5) * len(members) / count)] for k in range(count)}
        held += sorted(picked)
        train += [i for i in members if i not in picked]
    return sorted(train), sorted(held)


def fit_softmax(
    features: npt.NDArray[np.float32],
    targets: npt.NDArray[np.int64],
    num_classes: int,
    epochs: int = 300,
    lr: float = 0.05,
    l2: float = 1e-4,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Full-batch Adam on the cross-entropy of a linear softmax layer (deterministic).

    Features are standardized during training; the scaling is folded back into W and b so the
    stored head takes raw featurizer outputs.
    """
    import numpy as np

    x = features.astype(np.float64)
    mu, sigma = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sigma
    n, d = z.shape
    onehot = np.eye(num_classes)[targets]
    w = np.zeros((d, num_classes))
    b = np.zeros(num_classes)
    m_w, v_w, m_b, v_b = (np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b))
    for step in range(1, epochs + 1):
        logits = z @ w + b
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        grad = (p - onehot) / n
        g_w = z.T @ grad + l2 * w
        g_b = grad.sum(0)
        for g, m, v in ((g_w, m_w, v_w), (g_b, m_b, v_b)):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
        w -= lr * (m_w / (1 - 0.9**step)) / (np.sqrt(v_w / (1 - 0.999**step)) + 1e-8)
        b -= lr * (m_b / (1 - 0.9**step)) / (np.sqrt(v_b / (1 - 0.999**step)) + 1e-8)
    w_raw = w / sigma[:, None]
    b_raw = b - mu @ w_raw
    return w_raw.T.astype(np.float32), b_raw.astype(np.float32)


def train_head(
    session: FeaturizerSession,
    store: ModelStore,
    images_dir: Path,
    head_name: str,
    epochs: int = 300,
    progress: Callable[[int, int], None] | None = None,
    holdout: float = 0.0,
) -> TrainResult:
    import numpy as np

    from modules.featurizer.build import FEATURES_NAME, PROBS_NAME, export_head

    if head_name == "default":
        raise StoreError("the head name 'default' is reserved for the ImageNet classifier")
    manifest = store.get(session.model)
    paths, targets, labels = scan_dataset(images_dir)
    classifier = ImageClassifier(session, store)
    chunks = []
    for start in range(0, len(paths), 8):
        batch = classifier.preprocess(paths[start : start + 8])
        chunks.append(session.featurize(batch))
        if progress:
            progress(min(start + 8, len(paths)), len(paths))
    features = np.concatenate(chunks)
    y = np.asarray(targets, dtype=np.int64)
    train, held = holdout_split(targets, holdout)
    weight, bias = fit_softmax(features[train], y[train], len(labels), epochs=epochs)
    predicted = (features @ weight.T + bias).argmax(1)
    accuracy = float((predicted[train] == y[train]).mean())
    heldout = float((predicted[held] == y[held]).mean()) if held else None
    with tempfile.TemporaryDirectory(prefix="edgefleet-head-") as tmp:
        path = Path(tmp) / "head.onnx"
        export_head(weight, bias, path)
        artifact = store.add_artifact(path)
    manifest = store.get(session.model)  # re-read: keep concurrent changes
    manifest.heads[head_name] = Head(
        artifact=artifact,
        input=TensorSpec(name=FEATURES_NAME, shape=["batch", manifest.feature_dim]),
        output=TensorSpec(name=PROBS_NAME, shape=["batch", len(labels)]),
        num_classes=len(labels),
        labels="inline",
        label_names=labels,
        synthetic_weights=manifest.synthetic_weights,
        description=f"trained on {len(train)} images from {images_dir} ({session.precision})",
    )
    store.save(manifest)
    return TrainResult(head_name, labels, len(paths), accuracy, epochs, heldout, len(held))
