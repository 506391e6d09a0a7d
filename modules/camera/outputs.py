"""The camera's messages: a frame on ``frames``, a scoring result on ``results``, a thumbnail on
``thumbnails``; and the ``status`` block of its reported properties."""

from __future__ import annotations

from typing import Any

from edgefleet.sdk.module_client import Message
from modules.camera.capture import CaptureStatus, Frame
from modules.camera.pipeline import PipelineStats, iso_time, result_body
from modules.camera.policy import ThumbnailPolicy
from modules.camera.scorer import FrameScorer, timed_score
from modules.camera.thumbnail import draw_boxes, encode_thumbnail, jpeg

FRAMES = "frames"
RESULTS = "results"
THUMBNAILS = "thumbnails"


def frame_message(frame: Frame) -> Message:
    message = Message(data=jpeg(frame.image), content_type="image/jpeg")
    message.custom_properties.update(
        {"frameIndex": str(frame.sequence), "frameTime": iso_time(frame.wall_time)}
    )
    if frame.name:
        message.custom_properties["frameName"] = frame.name
    if frame.source_frame is not None:
        message.custom_properties["sourceFrame"] = str(frame.source_frame)
    return message


def score_messages(
    frame: Frame, scorer: FrameScorer, k: int, dropped: int, thumbnails: ThumbnailPolicy
) -> list[tuple[Message, str]]:
    """Score ``frame``: its ``results`` message, and a ``thumbnails`` message when its top score
    reaches the threshold. Route conditions can use the ``topClassId``/``topScore`` properties
    (a detector's: its best detection's, and ``detections``, their number). A detector's
    results carry every box (``detections``) and its thumbnails have them drawn."""
    top, device_ms, score_ms = timed_score(scorer, frame, k)
    detector = scorer.kind == "detector"
    key = "detections" if detector else None
    body = result_body(frame, top, scorer.describe(), score_ms, device_ms, dropped, key=key)
    best = top[0] if top else None
    result = Message.from_body(body)
    out = [(result, RESULTS)]
    if best is not None and thumbnails.wanted(best["score"]):
        image = draw_boxes(frame.image, top) if detector else frame.image
        thumb = encode_thumbnail(image, thumbnails.max_side, thumbnails.max_bytes)
        body["thumbnail"] = None  # wanted, but even the smallest JPEG is over the byte cap
        if thumb is not None:
            message = Message(
                data=thumb, content_type="image/jpeg", correlation_id=result.message_id
            )
            message.custom_properties.update(
                {
                    "sequence": str(frame.sequence),
                    "classId": str(best["class_id"]),
                    "label": best["label"],
                    "score": f"{best['score']:.4f}",
                }
            )
            out.append((message, THUMBNAILS))
            body["thumbnail"] = {"messageId": message.message_id, "bytes": len(thumb)}
        result.data = Message.from_body(body).data
    properties = {"sequence": str(frame.sequence)}
    if detector:
        properties["detections"] = str(len(top))
    if best is not None:
        properties.update({"topClassId": str(best["class_id"]), "topScore": f"{best['score']:.4f}"})
    result.custom_properties.update(properties)
    return out


def status_block(
    capture: CaptureStatus, stats: PipelineStats, scoring_error: str | None
) -> dict[str, Any]:
    """The ``status`` reported property: where capture stands and what the queue dropped."""
    block = {**capture.reported(), **stats.reported(), "scoringError": scoring_error}
    return block


def status_changed(previous: dict[str, Any] | None, current: dict[str, Any]) -> bool:
    """Whether the state part changed (counters alone are reported on a slower timer)."""
    keys = ("source", "state", "reconnects", "consecutiveFailures", "lastError", "scoringError")
    return previous is None or any(previous.get(k) != current.get(k) for k in keys)
