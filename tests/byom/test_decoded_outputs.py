"""Pure reading of an imported detector's decoded outputs: which outputs are which, box
formats and units, threshold, order and labels."""

from __future__ import annotations

import numpy as np
import pytest

from modules.accelerators.decoded_outputs import (
    DetectionOutputs,
    OutputsNotFound,
    decode,
    find_outputs,
    to_normalized_xywh,
)


def test_torchvision_and_tensorflow_output_names_are_recognised() -> None:
    torchvision: list[dict[str, object]] = [
        {"name": "boxes", "shape": ["n", 4]},
        {"name": "labels", "shape": ["n"]},
        {"name": "scores", "shape": ["n"]},
    ]
    assert find_outputs(torchvision) == DetectionOutputs("boxes", "scores", "labels")
    tensorflow = [
        {"name": "detection_boxes", "shape": [1, 100, 4]},
        {"name": "detection_classes", "shape": [1, 100]},
        {"name": "detection_scores", "shape": [1, 100]},
        {"name": "num_detections", "shape": [1]},
    ]
    assert find_outputs(tensorflow) == DetectionOutputs(
        "detection_boxes", "detection_scores", "detection_classes"
    )
    no_classes = [{"name": "pred_boxes", "shape": [1, 5, 4]}, {"name": "score", "shape": [1, 5]}]
    assert find_outputs(no_classes) == DetectionOutputs("pred_boxes", "score", None)


def test_a_classifier_output_is_not_a_detector() -> None:
    with pytest.raises(OutputsNotFound, match=r"this model has logits\['batch', 10\]"):
        find_outputs([{"name": "logits", "shape": ["batch", 10]}])
    with pytest.raises(OutputsNotFound):  # boxes whose last dimension is not 4
        find_outputs([{"name": "boxes", "shape": [1, 5, 5]}, {"name": "scores", "shape": [1, 5]}])


@pytest.mark.parametrize(
    ("fmt", "units", "box"),
    [
        ("xyxy", "pixels", [10, 20, 30, 60]),
        ("yxyx", "pixels", [20, 10, 60, 30]),
        ("xywh", "pixels", [10, 20, 20, 40]),
        ("cxcywh", "pixels", [20, 40, 20, 40]),
        ("xyxy", "normalized", [0.1, 0.2, 0.3, 0.6]),
        ("yxyx", "normalized", [0.2, 0.1, 0.6, 0.3]),
    ],
)
def test_every_box_format_gives_the_same_normalized_box(
    fmt: str, units: str, box: list[float]
) -> None:
    out = to_normalized_xywh(np.array([box], np.float32), fmt, units, 100, 100)  # type: ignore[arg-type]
    np.testing.assert_allclose(out, [[0.1, 0.2, 0.2, 0.4]], atol=1e-6)


def test_boxes_are_clipped_to_the_image() -> None:
    box = np.array([[-10, -10, 50, 150]], np.float32)
    out = to_normalized_xywh(box, "xyxy", "pixels", 100, 100)
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.5, 1.0]], atol=1e-6)


def test_decode_keeps_scores_above_the_threshold_best_first_with_labels() -> None:
    boxes = np.array([[[0, 0, 10, 10], [10, 10, 30, 30], [5, 5, 6, 6], [0, 0, 0, 0]]], np.float32)
    scores = np.array([[0.6, 0.9, 0.2, 0.95]], np.float32)  # the last box has no area
    classes = np.array([[1, 7, 1, 1]], np.float32)  # TensorFlow exports float class ids
    found = decode(
        boxes, scores, classes, box_format="xyxy", box_units="pixels", height=100, width=100,
        labels=["background", "lamp"], threshold=0.5, max_detections=10,
    )  # fmt: skip
    assert [(d.label, d.class_id, d.score) for d in found] == [("7", 7, 0.9), ("lamp", 1, 0.6)]
    assert found[0].box == (0.1, 0.1, 0.2, 0.2)
    top = decode(
        boxes, scores, None, box_format="xyxy", box_units="pixels", height=100, width=100,
        labels=[], threshold=0.0, max_detections=1,
    )  # fmt: skip
    assert [(d.label, d.score) for d in top] == [("0", 0.9)]


def test_outputs_that_disagree_in_length_are_an_error() -> None:
    with pytest.raises(ValueError, match="2 boxes but 3 scores"):
        decode(
            np.zeros((2, 4), np.float32), np.zeros(3, np.float32), None, box_format="xyxy",
            box_units="pixels", height=10, width=10, labels=[], threshold=0.5, max_detections=5,
        )  # fmt: skip
