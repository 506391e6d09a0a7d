"""Top-1 agreement of a quantized classifier with its fp32 reference, overall and on the inputs
where fp32 is not near a tie (its top-2 probabilities at least ``MARGIN`` apart)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modules.accelerators.classify import ImageClassifier

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def probabilities(
    classifier: ImageClassifier, data: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    import numpy as np

    out = [classifier.probabilities(data[i : i + 8]) for i in range(0, len(data), 8)]
    return np.concatenate(out).astype(np.float32)


def top1(classifier: ImageClassifier, data: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    return probabilities(classifier, data).argmax(1).astype("int64")


MARGIN = 0.05  # fp32 top-1 minus top-2 probability below which an input counts as a near-tie


def agreement(
    reference: npt.NDArray[np.float32], predicted: npt.NDArray[np.int64]
) -> dict[str, Any]:
    """Top-1 agreement with fp32, overall and on the inputs where fp32 is not near a tie."""
    import numpy as np

    top2 = np.sort(reference, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) >= MARGIN
    same = predicted == reference.argmax(1)
    return {
        "inputs": int(len(same)),
        "top1_agreement_with_fp32": round(float(same.mean()), 4),
        "disagreements": int((~same).sum()),
        f"share_fp32_margin_below_{MARGIN}": round(float(1.0 - clear.mean()), 4),
        f"top1_agreement_where_fp32_margin_ge_{MARGIN}": (
            round(float(same[clear].mean()), 4) if clear.any() else None
        ),
    }
