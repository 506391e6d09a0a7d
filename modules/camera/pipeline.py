"""Capture thread -> bounded drop-oldest queue -> one worker thread that processes each frame
(scores it, or sends it on as JPEG). The worker never holds up capture."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modules.camera.capture import CaptureConfig, CaptureLoop, CaptureStatus, Frame
from modules.camera.policy import DropOldestQueue, prepare_ahead

log = logging.getLogger("edgefleet.modules.camera")


@dataclass(frozen=True)
class PipelineStats:
    captured: int
    queued: int
    dropped: int
    processed: int
    failed: int

    def reported(self) -> dict[str, Any]:
        return {
            "framesQueued": self.queued,
            "framesDropped": self.dropped,
            "framesProcessed": self.processed,
            "framesFailed": self.failed,
        }


class FramePipeline:
    def __init__(
        self,
        capture: CaptureConfig,
        process: Callable[[Frame, FramePipeline], None],
        queue_size: int = 2,
        prepare: Callable[[Frame], Any] | None = None,
    ) -> None:
        """``prepare`` (e.g. the scorer's preprocessing) runs in the capture thread, so it
        overlaps the worker's scoring of the previous frame; its result is ``model_input``.
        It is skipped while frames wait (see ``prepare_ahead``): the worker prepares those."""
        self.queue: DropOldestQueue[Frame] = DropOldestQueue(queue_size)
        self.capture = CaptureLoop(capture, self._enqueue)
        self._process = process
        self._prepare = prepare
        self._processed = 0
        self._failed = 0
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="camera-worker", daemon=True)

    def _enqueue(self, frame: Frame) -> None:
        if self._prepare is not None and prepare_ahead(len(self.queue)):
            try:
                frame.model_input = self._prepare(frame)
            except Exception:  # the worker prepares it again and reports the failure
                log.debug("frame %d not prepared", frame.sequence, exc_info=True)
        self.queue.put(frame)

    @property
    def dropped(self) -> int:
        return self.queue.dropped

    def stats(self) -> PipelineStats:
        return PipelineStats(
            self.capture.status.frames,
            len(self.queue),
            self.queue.dropped,
            self._processed,
            self._failed,
        )

    def status(self) -> CaptureStatus:
        return self.capture.status

    def start(self) -> None:
        self._worker.start()
        self.capture.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop capture, then the worker (the frame it is on is finished, queued ones are not)."""
        self.capture.stop(timeout)
        self._stop.set()
        self.queue.close()
        self._worker.join(timeout)

    def _work(self) -> None:
        while not self._stop.is_set():
            frame = self.queue.get(timeout=0.2)
            if frame is None:
                continue
            try:
                self._process(frame, self)
                self._processed += 1
            except Exception:  # one bad frame must not end the worker
                self._failed += 1
                log.exception("frame %d not processed", frame.sequence)


def iso_time(wall: float) -> str:
    return (
        datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def result_body(
    frame: Frame,
    top: list[dict[str, Any]],
    scorer: dict[str, Any],
    score_ms: float,
    device_ms: float | None,
    dropped: int,
    done: float | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """A ``results`` message: top-k (under ``top<k>``, or ``key``: a detector's ``detections``),
    capture -> result latency, the frame's time and number."""
    finished = time.monotonic() if done is None else done
    body: dict[str, Any] = {
        "sequence": frame.sequence,
        "frameTime": iso_time(frame.wall_time),
        **scorer,
        key or f"top{len(top)}": top,
        "latencyMs": round((finished - frame.captured) * 1000, 3),
        "scoreMs": round(score_ms, 3),
        "deviceMs": round(device_ms, 3) if device_ms is not None else None,
        "droppedFrames": dropped,
    }
    if frame.name:
        body["frame"] = frame.name
    if frame.source_frame is not None:
        body["sourceFrame"] = frame.source_frame
    return body
