"""The camera's decisions, free of OpenCV and threads: the frame queue's drop-oldest policy, the
reconnect schedule, frame pacing and whether/how big a thumbnail is."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A bounded queue between the capture thread and the scoring worker.

    ``put`` never blocks: when the queue is full the oldest frame goes, so the worker always
    scores the freshest frames, memory stays bounded and capture never stalls behind scoring.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("queue size must be at least 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def put(self, item: T) -> T | None:
        """Add ``item``; returns the frame it pushed out (and counts it), else None."""
        with self._cond:
            dropped = self._items.popleft() if len(self._items) >= self.maxsize else None
            if dropped is not None:
                self.dropped += 1
            self._items.append(item)
            self.put_count += 1
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest queued frame; None after ``timeout`` or once closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


@dataclass(frozen=True)
class Backoff:
    """Exponential reconnect delays: ``initial * factor**(failures-1)``, capped at ``maximum``."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        if failures < 1:
            return 0.0
        # cap the exponent first so a long outage cannot overflow the float
        exponent = min(failures - 1, 64)
        return float(min(self.maximum, self.initial * self.factor**exponent))


def prepare_ahead(waiting: int) -> bool:
    """Whether the capture thread prepares a new frame's model input: only when no frame is
    waiting for the worker. Then the frame will be scored next and preparing it overlaps the
    current scoring; with frames waiting the worker is behind, the new frame may be dropped
    unscored, and preparing it would only take CPU from the worker."""
    return waiting == 0


def next_tick(previous: float, period: float, now: float) -> float:
    """When the next frame is due: one period after the last, but never in the past (a late
    frame does not cause a burst of catch-up frames)."""
    due = previous + period
    return due if due > now else now


@dataclass(frozen=True)
class ThumbnailPolicy:
    """Thumbnails of frames whose top score reaches ``threshold`` (None: no thumbnails)."""

    threshold: float | None = None
    max_side: int = 320
    max_bytes: int = 32 * 1024

    def wanted(self, top_score: float) -> bool:
        return self.threshold is not None and top_score >= self.threshold


def thumbnail_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The frame's size scaled so its longer side is at most ``max_side`` (never enlarged)."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


# JPEG qualities tried in turn before the image is made smaller
QUALITIES = (85, 70, 55, 40, 25)


def encode_attempts(width: int, height: int, max_side: int) -> list[tuple[int, int, int]]:
    """(width, height, quality) in the order to try until one encodes within the byte cap:
    every quality at the capped size, then the same at half, quarter, ... down to 16 px."""
    attempts: list[tuple[int, int, int]] = []
    w, h = thumbnail_size(width, height, max_side)
    while True:
        attempts.extend((w, h, q) for q in QUALITIES)
        if max(w, h) <= 16:
            return attempts
        w, h = thumbnail_size(w, h, max(16, max(w, h) // 2))
