"""The capture thread: frames from a source, paced to the frame rate, reconnecting with backoff.

Readers are thin OpenCV adapters; what to do when a source fails or ends is decided here from
the source kind and the ``Backoff`` schedule, and published as a ``CaptureStatus`` snapshot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from modules.camera.policy import Backoff, next_tick
from modules.camera.source import SourceSpec

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Image = npt.NDArray[np.uint8]

State = Literal["starting", "streaming", "reconnecting", "ended", "stopped"]
OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 5000


class SourceError(Exception):
    """A source that cannot be opened (missing file, refused connection, no device)."""


@dataclass
class Frame:
    sequence: int  # counts every captured frame of this capture, across reconnects
    captured: float  # time.monotonic() when read: the start of capture -> result latency
    wall_time: float  # time.time() when read
    image: Image  # HxWx3 BGR uint8
    name: str = ""  # photo name (photos source)
    source_frame: int | None = None  # frame number inside a video file
    model_input: Any = None  # the scorer's input, prepared in the capture thread


class FrameReader(Protocol):
    def read(self) -> tuple[Image, str, int | None] | None:
        """(BGR image, name, frame number in the file) or None when the source ended/failed."""
        ...

    def skip(self) -> bool:
        """Pass over one frame without decoding it; False when the source ended/failed."""
        ...

    def release(self) -> None: ...


class PhotoReader:
    """scikit-image's photos in turn, forever."""

    def __init__(self, photos: Sequence[str]) -> None:
        import cv2
        from skimage import data

        self._images = [
            (name, cv2.cvtColor(getattr(data, name)(), cv2.COLOR_RGB2BGR)) for name in photos
        ]
        self._index = 0

    def read(self) -> tuple[Image, str, int | None] | None:
        name, image = self._images[self._index % len(self._images)]
        self._index += 1
        return image.copy(), name, None

    def skip(self) -> bool:
        self._index += 1
        return True

    def release(self) -> None:
        pass


class VideoReader:
    """OpenCV ``VideoCapture`` on a file, an RTSP/HTTP URL or a V4L2 device."""

    def __init__(self, spec: SourceSpec, resolution: tuple[int, int] | None) -> None:
        import cv2

        self.spec = spec
        if spec.kind == "device":
            self._cap = cv2.VideoCapture(spec.index if spec.index is not None else spec.target)
            if resolution is not None:
                self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, resolution[0])
                self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, resolution[1])
        else:
            if spec.kind == "file":
                from pathlib import Path

                if not Path(spec.target).is_file():
                    raise SourceError(f"no such video file: {spec.target}")
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                OPEN_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                READ_TIMEOUT_MS,
            ]
            self._cap = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, params)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"cannot open {spec.describe()}")
        self._file = spec.kind == "file"

    def read(self) -> tuple[Image, str, int | None] | None:
        import cv2

        position = int(self._cap.get(cv2.CAP_PROP_POS_FRAMES)) if self._file else None
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        return cast("Image", image), "", position

    def skip(self) -> bool:
        return bool(self._cap.grab())

    def release(self) -> None:
        self._cap.release()


def open_reader(
    spec: SourceSpec, photos: Sequence[str], resolution: tuple[int, int] | None
) -> FrameReader:
    if spec.kind == "photos":
        return PhotoReader(photos)
    return VideoReader(spec, resolution)


def fit(image: Image, resolution: tuple[int, int] | None) -> Image:
    """The frame at the configured resolution (sources that ignore the request are resized)."""
    if resolution is None or (image.shape[1], image.shape[0]) == resolution:
        return image
    import cv2

    return cast("Image", cv2.resize(image, resolution, interpolation=cv2.INTER_AREA))


@dataclass(frozen=True)
class CaptureStatus:
    source: str
    state: State = "starting"
    frames: int = 0
    reconnects: int = 0  # successful re-opens after a failure
    failures: int = 0  # consecutive failures now (0 while streaming)
    retry_in_secs: float | None = None
    last_error: str | None = None

    def reported(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "state": self.state,
            "framesCaptured": self.frames,
            "reconnects": self.reconnects,
            "consecutiveFailures": self.failures,
            "retryInSecs": self.retry_in_secs,
            "lastError": self.last_error,
        }


@dataclass
class CaptureConfig:
    spec: SourceSpec
    period: float | None  # seconds between frames; None: as fast as the source gives them
    loop: bool = True
    resolution: tuple[int, int] | None = None
    photos: Sequence[str] = ()
    backoff: Backoff = field(default_factory=Backoff)


class CaptureLoop:
    """Runs in its own thread until ``stop()``; hands every frame to ``on_frame``."""

    def __init__(
        self,
        config: CaptureConfig,
        on_frame: Callable[[Frame], None],
        opener: Callable[[CaptureConfig], FrameReader] | None = None,
    ) -> None:
        self.config = config
        self._on_frame = on_frame
        self._open = opener or (lambda c: open_reader(c.spec, c.photos, c.resolution))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._status = CaptureStatus(config.spec.describe())
        self._thread = threading.Thread(target=self._run, name="camera-capture", daemon=True)

    @property
    def status(self) -> CaptureStatus:
        with self._lock:
            return self._status

    def _set(self, **changes: Any) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._set(state="stopped", retry_in_secs=None)

    def _run(self) -> None:
        sequence = 0
        failures = 0
        ever_opened = False
        while not self._stop.is_set():
            try:
                reader = self._open(self.config)
            except (SourceError, OSError, ValueError) as exc:
                failures += 1
                if not self._wait_after_failure(failures, str(exc)):
                    return
                continue
            if ever_opened and failures:
                self._set(reconnects=self.status.reconnects + 1)
            ever_opened = True
            try:
                delivered = self._stream(reader, sequence)
            finally:
                reader.release()
            sequence += delivered
            if delivered:
                failures = 0
            if self._stop.is_set():
                return
            if self.config.spec.kind in ("file", "photos"):
                if not self.config.loop:
                    self._set(state="ended", failures=0, retry_in_secs=None)
                    return
                if delivered:
                    continue  # rewind at once: the file played to its end
                failures += 1
                error = f"{self.config.spec.describe()} gave no frames"
            else:
                failures += 1
                error = f"{self.config.spec.describe()}: stream ended or stalled"
            if not self._wait_after_failure(failures, error):
                return

    def _wait_after_failure(self, failures: int, error: str) -> bool:
        delay = self.config.backoff.delay(failures)
        self._set(state="reconnecting", failures=failures, retry_in_secs=delay, last_error=error)
        return not self._stop.wait(delay)

    def _stream(self, reader: FrameReader, first_sequence: int) -> int:
        """Deliver frames until the source ends/fails or stop; returns how many were delivered."""
        period = self.config.period
        paced = not self.config.spec.live
        delivered = 0
        due = time.monotonic()
        while not self._stop.is_set():
            if paced and period:
                wait = due - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
            if period and not paced and time.monotonic() < due:
                # a live source faster than the frame rate: take its frame off the wire, undecoded
                if not reader.skip():
                    break
                continue
            got = reader.read()
            if got is None:
                break
            now = time.monotonic()
            image, name, position = got
            frame = Frame(
                first_sequence + delivered,
                now,
                time.time(),
                fit(image, self.config.resolution),
                name,
                position,
            )
            delivered += 1
            if delivered == 1:
                self._set(state="streaming", failures=0, retry_in_secs=None)
            self._set(frames=self.status.frames + 1)
            self._on_frame(frame)
            if period:
                due = next_tick(due, period, now)
        return delivered
