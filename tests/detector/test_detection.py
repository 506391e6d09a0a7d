"""The detector's pure decisions: pyramid scales, proposal decoding, regression, squaring, NMS,
crops and the wire format of detections."""

from __future__ import annotations

import numpy as np
import pytest

from modules.accelerators import detection as det


def test_pyramid_scales_cover_faces_from_min_face_to_the_short_side() -> None:
    scales = det.pyramid_scales(480, 640, min_face=20, factor=0.709)
    assert scales[0] == pytest.approx(12 / 20)
    assert all(b == pytest.approx(a * 0.709) for a, b in zip(scales, scales[1:], strict=False))
    assert 480 * scales[-1] >= 12 > 480 * scales[-1] * 0.709  # the last level holds one window
    assert det.pyramid_scales(10, 300, min_face=20) == []  # shorter than a 20-pixel face
    assert len(det.pyramid_scales(480, 640, min_face=40)) < len(scales)
    with pytest.raises(ValueError):
        det.pyramid_scales(100, 100, factor=1.2)


def test_scaled_size_never_drops_below_one_window() -> None:
    assert det.scaled_size(100, 201, 0.5) == (50, 101)
    assert det.scaled_size(20, 20, 0.1) == (12, 12)


def test_proposals_map_grid_cells_back_to_image_windows() -> None:
    prob = np.zeros((5, 6), np.float32)
    prob[2, 3] = 0.9  # row 2, column 3
    prob[4, 0] = 0.5  # under the threshold
    reg = np.zeros((4, 5, 6), np.float32)
    reg[:, 2, 3] = [0.1, -0.1, 0.2, 0.0]
    boxes, deltas = det.proposals(prob, reg, scale=0.5, threshold=0.6)
    # cell (2, 3) is the window at x = 2 * 3, y = 2 * 2 of side 12 at scale 0.5: x2 in the image
    np.testing.assert_allclose(boxes, [[12, 8, 36, 32, 0.9]], rtol=1e-6)
    np.testing.assert_allclose(deltas, [[0.1, -0.1, 0.2, 0.0]])
    empty, none = det.proposals(prob, reg, scale=1.0, threshold=0.95)
    assert empty.shape == (0, 5) and none.shape == (0, 4)


def test_nms_keeps_the_best_of_overlapping_boxes_and_min_mode_drops_nested_ones() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.95], np.float32)
    # IoU(0, 1) = 81 / 119 = 0.68; box 3 lies inside both (IoU 16/100 with box 0)
    assert det.nms(boxes, scores, 0.5).tolist() == [3, 1, 2]
    assert det.nms(boxes, scores, 0.7).tolist() == [3, 1, 0, 2]
    assert det.nms(boxes, scores, 0.7, mode="min").tolist() == [3, 2]
    assert det.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).tolist() == []


def test_regression_moves_corners_by_fractions_of_the_box_and_square_keeps_the_centre() -> None:
    boxes = np.array([[10, 20, 30, 60, 0.9]], np.float32)  # 20 wide, 40 high
    moved = det.regress(boxes, np.array([[0.1, -0.25, -0.1, 0.5]], np.float32))
    np.testing.assert_allclose(moved, [[12, 10, 28, 80, 0.9]])
    squared = det.square(boxes)
    np.testing.assert_allclose(squared, [[0, 20, 40, 60, 0.9]])


def test_crops_average_when_shrinking_and_repeat_pixels_when_enlarging() -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:, :, 0] = [[0, 10, 20, 30], [40, 50, 60, 70], [80, 90, 100, 110], [120, 130, 140, 150]]
    whole = np.array([[0, 0, 4, 4, 1.0]], np.float32)
    shrunk = det.crops(rgb, whole, 2)[0, :, :, 0]
    np.testing.assert_allclose(shrunk, [[25, 45], [105, 125]])  # 2x2 means
    grown = det.crops(rgb, np.array([[1, 1, 3, 3, 1.0]], np.float32), 4)[0, :, :, 0]
    np.testing.assert_allclose(grown, [[50, 50, 60, 60]] * 2 + [[90, 90, 100, 100]] * 2)
    odd = det.crops(rgb, whole, 3)[0, :, :, 0]  # windows of 2 overlapping by one pixel
    np.testing.assert_allclose(odd[0], [25, 35, 45])


def test_crops_pad_outside_the_image_with_zeros() -> None:
    rgb = np.full((10, 10, 3), 200, np.uint8)
    rgb[:, 5:] = 100
    out = det.crops(rgb, np.array([[-10, 0, 10, 20, 1.0], [5, 0, 10, 5, 1.0]], np.float32), 4)
    assert out.shape == (2, 4, 4, 3) and out.dtype == np.float32
    assert out[0, 0, 0, 0] == 0  # left half of the first box is outside the image
    assert out[0, 0, 2, 0] == 200 and out[0, 0, 3, 0] == 100
    assert out[0, 3, 2, 0] == 0  # bottom half too
    np.testing.assert_allclose(out[1], 100)


def test_normalized_boxes_are_clipped_fractions_of_the_image() -> None:
    boxes = np.array([[-20, 10, 100, 60, 0.9], [150, 100, 250, 300, 0.8]], np.float32)
    xywh = det.normalized_xywh(boxes, height=200, width=200)
    np.testing.assert_allclose(xywh, [[0, 0.05, 0.5, 0.25], [0.75, 0.5, 0.25, 0.5]])


def test_iou_of_normalized_boxes() -> None:
    assert det.iou((0, 0, 0.5, 0.5), (0, 0, 0.5, 0.5)) == pytest.approx(1.0)
    assert det.iou((0, 0, 0.5, 0.5), (0.25, 0, 0.5, 0.5)) == pytest.approx(1 / 3)
    assert det.iou((0, 0, 0.1, 0.1), (0.5, 0.5, 0.1, 0.1)) == 0.0


def test_detections_travel_as_tensors_and_back() -> None:
    found = [
        det.Detection((0.1, 0.2, 0.3, 0.4), 0.99, 0, "face"),
        det.Detection((0.5, 0.5, 0.1, 0.1), 0.75, 0, "face"),
    ]
    tensors = det.detections_to_tensors(found)
    assert tensors["boxes"].shape == (1, 2, 4) and tensors["boxes"].dtype == np.float32
    assert tensors["scores"].shape == (1, 2)
    assert tensors["classes"].dtype == np.int32
    assert tensors["labels"].tolist() == [[b"face", b"face"]]
    back = det.detections_from_tensors(tensors)
    assert [d.label for d in back] == ["face", "face"]
    assert back[0].box == pytest.approx(found[0].box) and back[1].score == pytest.approx(0.75)
    empty = det.detections_to_tensors([])
    assert empty["boxes"].shape == (1, 0, 4) and empty["labels"].shape == (1, 0)
    assert found[0].as_json() == {
        "box": {"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4},
        "class_id": 0,
        "label": "face",
        "score": 0.99,
    }


def test_the_cascades_mac_counts_match_the_networks() -> None:
    from modules.accelerators.mtcnn import CROP_MACS, pnet_macs
    from modules.featurizer.architectures import count_macs
    from modules.featurizer.mtcnn_nets import NETS, FirstOutput

    for side in (12, 37, 100):
        assert pnet_macs(side, side) == count_macs(FirstOutput(NETS["pnet"]()), side)
    for stage, side in (("rnet", 24), ("onet", 48)):
        assert CROP_MACS[stage] == count_macs(FirstOutput(NETS[stage]()), side)
