"""SSD300-VGG16 (the synthetic-weight cost model): its anchors, offsets and per-class NMS, and
the network's output layout matching those anchors."""

from __future__ import annotations

import numpy as np
import pytest

from modules.accelerators import detection as det


def test_ssd300_has_8732_anchors_laid_out_cell_by_cell() -> None:
    anchors = det.ssd_anchors()
    assert anchors.shape == (8732, 4)
    # the first cell of the 38x38 map: a 30 px square, a sqrt(30 * 60) px square, then 2:1, 1:2
    side, big = 30 / 300, np.sqrt(30 * 60) / 300
    np.testing.assert_allclose(anchors[0], [0.5 / 38, 0.5 / 38, side, side], rtol=1e-5)
    np.testing.assert_allclose(anchors[1, 2:], [big, big], rtol=1e-5)
    np.testing.assert_allclose(anchors[2, 2:], [side * np.sqrt(2), side / np.sqrt(2)], rtol=1e-5)
    np.testing.assert_allclose(anchors[4, :2], [1.5 / 38, 0.5 / 38], rtol=1e-5)  # next cell
    np.testing.assert_allclose(
        anchors[-1], [0.5, 0.5, 264 / 300 / np.sqrt(2), 264 / 300 * np.sqrt(2)], rtol=1e-5
    )


def test_offsets_move_the_centre_by_tenths_and_scale_the_size_exponentially() -> None:
    anchors = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    np.testing.assert_allclose(
        det.ssd_decode(np.zeros((1, 4), np.float32), anchors), [[0.4, 0.3, 0.6, 0.7]], rtol=1e-6
    )
    moved = det.ssd_decode(np.array([[1.0, -1.0, np.log(2) / 0.2, 0.0]], np.float32), anchors)
    # centre (0.5 + 0.1 * 0.2, 0.5 - 0.1 * 0.4), width doubled to 0.4
    np.testing.assert_allclose(moved, [[0.32, 0.26, 0.72, 0.66]], rtol=1e-5)


def test_class_detections_suppress_per_class_and_skip_the_background() -> None:
    corners = np.array(
        [[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9], [0.0, 0.0, 1.0, 1.0]],
        np.float32,
    )
    probabilities = np.array(
        [
            [0.05, 0.9, 0.05],  # class 1
            [0.1, 0.8, 0.1],  # class 1, overlapping the first: suppressed
            [0.2, 0.1, 0.7],  # class 2
            [0.99, 0.005, 0.005],  # background only
        ],
        np.float32,
    )
    found = det.class_detections(corners, probabilities, ["bg", "cat", "dog"], 0.5, 0.45, 10)
    assert [(d.label, d.class_id) for d in found] == [("cat", 1), ("dog", 2)]
    assert found[0].box == pytest.approx((0.1, 0.1, 0.4, 0.4)) and found[0].score == pytest.approx(
        0.9
    )
    assert (
        det.class_detections(corners, probabilities, ["bg", "cat", "dog"], 0.5, 0.45, 1)
        == found[:1]
    )


def test_the_network_answers_one_offset_and_class_row_per_anchor() -> None:
    """Shapes only (torch's meta device: no weights, no arithmetic)."""
    import torch

    from modules.featurizer.ssd_vgg import VOC_CLASSES, SsdVgg

    with torch.device("meta"):
        net = SsdVgg()
        loc, conf = net(torch.zeros(1, 3, 300, 300))
    assert tuple(loc.shape) == (1, len(det.ssd_anchors()), 4)
    assert tuple(conf.shape) == (1, len(det.ssd_anchors()), VOC_CLASSES)
