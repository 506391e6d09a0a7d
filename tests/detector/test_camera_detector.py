"""The camera module's in-process scorer with the face detector: boxes per frame in its results,
and thumbnails with the boxes drawn."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from modules.accelerators import detection as det
from modules.accelerators.classifier_config import ClassifierConfig
from modules.camera.capture import Frame
from modules.camera.outputs import score_messages
from modules.camera.policy import ThumbnailPolicy
from modules.camera.scorer import LocalDetector, open_frame_scorer
from modules.camera.thumbnail import BOX_COLOUR
from tests.detector.conftest import ASTRONAUT_FACE


def _frame(name: str, sequence: int) -> Frame:
    bgr = np.asarray(cv2.cvtColor(np.asarray(getattr(data, name)()), cv2.COLOR_RGB2BGR), np.uint8)
    return Frame(sequence, time.monotonic(), time.time(), bgr, name=name)


def test_the_camera_sends_the_faces_of_each_frame_and_draws_them_on_thumbnails(
    detector_store: Path,
) -> None:
    scorer = open_frame_scorer(
        ClassifierConfig(model="face-detector", model_dir=str(detector_store))
    )
    assert isinstance(scorer, LocalDetector)
    policy = ThumbnailPolicy(threshold=0.9, max_side=256, max_bytes=64 * 1024)
    try:
        face = score_messages(_frame("astronaut", 1), scorer, 5, 0, policy)
        empty = score_messages(_frame("coffee", 2), scorer, 5, 0, policy)
    finally:
        scorer.close()

    assert [output for _m, output in face] == ["results", "thumbnails"]
    result, thumbnail = face[0][0], face[1][0]
    body = json.loads(result.data)
    assert body["model"] == "face-detector" and body["frame"] == "astronaut"
    (found,) = body["detections"]
    box = found["box"]
    assert found["label"] == "face" and found["score"] > 0.95
    assert det.iou((box["x"], box["y"], box["w"], box["h"]), ASTRONAUT_FACE) > 0.7
    assert result.custom_properties["detections"] == "1"
    assert body["thumbnail"]["messageId"] == thumbnail.message_id

    thumb = cv2.imdecode(np.frombuffer(thumbnail.data, np.uint8), cv2.IMREAD_COLOR)
    assert thumb is not None and thumb.shape[:2] == (256, 256)
    top = round(box["y"] * 256)  # the box's top edge, drawn in the box colour
    row = thumb[top, round(box["x"] * 256) + 5 : round((box["x"] + box["w"]) * 256) - 5]
    assert np.abs(row.astype(int) - BOX_COLOUR).max(axis=1).mean() < 60

    ((coffee, output),) = empty  # no face: a result with no detections and no thumbnail
    assert output == "results"
    assert json.loads(coffee.data)["detections"] == []
    assert coffee.custom_properties["detections"] == "0"
