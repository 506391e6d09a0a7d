"""The camera's capture pipeline without a model: settings, queue policy, reconnects, thumbnails,
and the module sending video frames through a real edge hub."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from modules.camera.capture import CaptureConfig, CaptureLoop, CaptureStatus, Frame
from modules.camera.frames import jpeg_frame
from modules.camera.outputs import score_messages
from modules.camera.pipeline import FramePipeline
from modules.camera.policy import (
    Backoff,
    DropOldestQueue,
    ThumbnailPolicy,
    encode_attempts,
    next_tick,
    prepare_ahead,
    thumbnail_size,
)
from modules.camera.settings import CameraSettings, apply_settings, config_from_env
from modules.camera.source import SettingError, SourceSpec, parse_resolution, parse_source
from modules.camera.thumbnail import encode_thumbnail
from modules.camera.video import write_photo_video
from tests.support.edgehub import edge_hub
from tests.support.modules import Sink, start_module, stop_module
from tests.support.mqtt import wait_until

FAST = Backoff(initial=0.05, factor=2.0, maximum=0.2)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    assert wait_until(check, timeout, 0.01), f"timed out waiting for {what}"


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "photos.avi"
    write_photo_video(path, fps=10, seconds_per_photo=0.5, photos=("chelsea", "coffee"))
    return path


def _decode(jpeg: bytes) -> Any:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


# -- settings and pure policy ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, SourceSpec("photos")),
        ("photos", SourceSpec("photos")),
        ("/data/cam.mp4", SourceSpec("file", "/data/cam.mp4")),
        ("file:///data/cam.mp4", SourceSpec("file", "/data/cam.mp4")),
        ("rtsp://cam.local/stream", SourceSpec("url", "rtsp://cam.local/stream")),
        ("http://10.0.0.5:8080/video.mjpg", SourceSpec("url", "http://10.0.0.5:8080/video.mjpg")),
        ("/dev/video2", SourceSpec("device", "/dev/video2", 2)),
        ("v4l2:1", SourceSpec("device", "/dev/video1", 1)),
        ("0", SourceSpec("device", "/dev/video0", 0)),
    ],
)
def test_source_setting_names_a_file_url_device_or_the_photos(
    value: str | None, expected: SourceSpec
) -> None:
    assert parse_source(value) == expected


def test_source_and_settings_errors_name_the_setting() -> None:
    with pytest.raises(SettingError, match="Source"):
        parse_source("ftp://cam/x.mp4")
    assert parse_source("rtsp://admin:secret@cam/s").describe() == "rtsp://admin:***@cam/s"
    assert parse_resolution("1280x720") == (1280, 720) and parse_resolution("native") is None
    config = config_from_env({})
    assert config.source.kind == "photos" and config.interval == 2.0 and config.scoring == "off"
    for bad in (
        {"Resolution": "big"},
        {"FrameRate": 0},
        {"Scoring": "cloud"},
        {"ThumbnailThreshold": 2},
        {"Loop": "maybe"},
    ):
        with pytest.raises(SettingError, match=next(iter(bad))):
            apply_settings(config, bad)
    settings = CameraSettings(config)
    with pytest.raises(SettingError):
        settings.apply({"FrameRate": 10, "Resolution": "nope"})
    assert settings.config == config and settings.generation == 0  # nothing half-applied
    settings.apply({"FrameRate": 10, "Source": "/v.mp4", "Scoring": "local"})
    assert settings.generation == 1
    assert settings.reported()["FrameInterval"] == pytest.approx(0.1)
    assert settings.reported()["Source"] == "/v.mp4"


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(initial=0.5, factor=2.0, maximum=30.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(10_000) == 30.0
    assert next_tick(10.0, 0.1, 10.05) == pytest.approx(10.1)
    assert next_tick(10.0, 0.1, 11.0) == 11.0  # late: no burst of catch-up frames


def test_full_queue_drops_the_oldest_frame_and_counts_it() -> None:
    assert prepare_ahead(0) and not prepare_ahead(1)
    queue: DropOldestQueue[int] = DropOldestQueue(2)
    assert [queue.put(i) for i in range(5)] == [None, None, 0, 1, 2]
    assert queue.dropped == 3 and len(queue) == 2
    assert [queue.get(0), queue.get(0), queue.get(0)] == [3, 4, None]
    queue.close()
    assert queue.get(None) is None  # a closed queue never blocks the worker


def test_thumbnails_respect_the_side_and_byte_caps() -> None:
    assert thumbnail_size(640, 480, 320) == (320, 240)
    assert thumbnail_size(100, 50, 320) == (100, 50)  # never enlarged
    sides = [max(w, h) for w, h, _q in encode_attempts(640, 480, 320)]
    assert sides[0] == 320 and sides == sorted(sides, reverse=True) and sides[-1] <= 16
    policy = ThumbnailPolicy(threshold=0.5)
    assert policy.wanted(0.5) and not policy.wanted(0.49)
    assert not ThumbnailPolicy(threshold=None).wanted(1.0)
    image = _decode(jpeg_frame("astronaut"))
    for max_side, max_bytes in ((320, 100_000), (200, 6000), (128, 1500)):
        thumb = encode_thumbnail(image, max_side, max_bytes)
        assert thumb is not None and len(thumb) <= max_bytes
        assert max(_decode(thumb).shape[:2]) <= max_side
    assert encode_thumbnail(image, 320, 200) is None  # no JPEG is that small: none is sent


# -- the capture pipeline --------------------------------------------------------------------


class SlowScorer:
    """Stands in for an accelerator that cannot keep up with the frame rate."""

    kind = "classifier"

    def __init__(self, secs: float) -> None:
        self.secs = secs
        self.calls = 0
        self.prepared_ahead = 0

    def describe(self) -> dict[str, Any]:
        return {"model": "slow", "accelerator": "test", "precision": "fp32", "engine": "sleep"}

    def prepare(self, bgr: Any) -> Any:
        return bgr.shape

    def score(
        self, bgr: Any, k: int, prepared: Any = None
    ) -> tuple[list[dict[str, Any]], float | None]:
        self.prepared_ahead += prepared is not None
        self.calls += 1
        time.sleep(self.secs)
        return [{"class_id": 1, "label": "goldfish", "score": 0.9}], None

    def close(self) -> None:
        pass


def test_a_slow_scorer_makes_the_queue_drop_the_oldest_frames(video: Path) -> None:
    scorer = SlowScorer(0.1)
    bodies: list[dict[str, Any]] = []
    thumbs: list[bytes] = []
    policy = ThumbnailPolicy(threshold=0.5, max_side=64, max_bytes=3000)

    def process(frame: Frame, pipeline: FramePipeline) -> None:
        import json

        for message, output in score_messages(frame, scorer, 1, pipeline.dropped, policy):
            if output == "results":
                bodies.append(json.loads(message.data))
            else:
                thumbs.append(message.data)

    capture = CaptureConfig(SourceSpec("file", str(video)), 1 / 100, loop=True, backoff=FAST)
    pipeline = FramePipeline(capture, process, 2, lambda f: scorer.prepare(f.image))
    pipeline.start()
    try:
        wait_for(lambda: len(bodies) >= 6, "six results")
    finally:
        pipeline.stop()
    stats = pipeline.stats()
    assert stats.dropped > 0
    # every captured frame was scored, is still queued, or was dropped: memory stays bounded
    assert stats.captured == stats.processed + stats.queued + stats.dropped + stats.failed
    sequences = [b["sequence"] for b in bodies]
    assert sequences == sorted(sequences) and sequences[-1] - sequences[0] > len(sequences)
    dropped = [b["droppedFrames"] for b in bodies]
    assert dropped == sorted(dropped) and dropped[-1] > 0  # the count travels in the results
    assert all(b["top1"][0]["label"] == "goldfish" and b["latencyMs"] > 0 for b in bodies)
    assert all(b["thumbnail"]["bytes"] <= 3000 for b in bodies)
    assert thumbs and all(len(t) <= 3000 for t in thumbs)
    # only frames that met an empty queue were prepared in the capture thread
    assert 0 < scorer.prepared_ahead < len(bodies)


def _states(loop: CaptureLoop, seen: list[CaptureStatus], stop: threading.Event) -> None:
    while not stop.is_set():
        status = loop.status
        if not seen or seen[-1] != status:
            seen.append(status)
        time.sleep(0.005)


def test_a_deleted_video_file_is_retried_with_backoff_until_it_returns(
    video: Path, tmp_path: Path
) -> None:
    path = tmp_path / "cam.avi"
    path.write_bytes(video.read_bytes())
    frames: list[Frame] = []
    loop = CaptureLoop(
        CaptureConfig(SourceSpec("file", str(path)), 1 / 50, loop=True, backoff=FAST),
        frames.append,
    )
    seen: list[CaptureStatus] = []
    watching = threading.Event()
    watcher = threading.Thread(target=_states, args=(loop, seen, watching))
    loop.start()
    watcher.start()
    try:
        wait_for(lambda: loop.status.state == "streaming", "streaming")
        path.unlink()  # the file goes while it plays: the next rewind cannot reopen it
        wait_for(lambda: loop.status.failures >= 4, "four failed reopens")
        before = len(frames)
        path.write_bytes(video.read_bytes())
        wait_for(lambda: loop.status.state == "streaming" and len(frames) > before + 3, "frames")
    finally:
        loop.stop()
        watching.set()
        watcher.join()
    retries = [s.retry_in_secs for s in seen if s.state == "reconnecting"]
    assert list(dict.fromkeys(retries)) == [0.05, 0.1, 0.2]  # doubling, then capped
    assert loop.status.reconnects == 1 and "no such video file" in (loop.status.last_error or "")
    assert [f.sequence for f in frames] == list(range(len(frames)))  # numbering survives


def test_a_file_without_loop_ends_without_retrying(video: Path) -> None:
    frames: list[Frame] = []
    loop = CaptureLoop(
        CaptureConfig(SourceSpec("file", str(video)), None, loop=False, backoff=FAST),
        frames.append,
    )
    loop.start()
    try:
        wait_for(lambda: loop.status.state == "ended", "the end of the file")
    finally:
        loop.stop()
    assert len(frames) == 10 and [f.source_frame for f in frames] == list(range(10))
    assert loop.status.failures == 0 and loop.status.reconnects == 0


class FastLiveReader:
    """A live source that always has a new frame."""

    def __init__(self) -> None:
        self.decoded = 0
        self.skipped = 0

    def read(self) -> tuple[Any, str, int | None] | None:
        self.decoded += 1
        time.sleep(0.001)
        return np.zeros((48, 64, 3), np.uint8), "", None

    def skip(self) -> bool:
        self.skipped += 1
        time.sleep(0.001)
        return True

    def release(self) -> None:
        pass


def test_a_live_source_faster_than_the_frame_rate_is_thinned_without_decoding() -> None:
    reader = FastLiveReader()
    frames: list[Frame] = []
    loop = CaptureLoop(
        CaptureConfig(parse_source("rtsp://cam/stream"), 0.05, backoff=FAST),
        frames.append,
        opener=lambda _config: reader,
    )
    loop.start()
    try:
        wait_for(lambda: len(frames) >= 4, "four frames")
    finally:
        loop.stop()
    assert reader.decoded == len(frames)  # only the frames sent on were decoded
    assert reader.skipped > reader.decoded


class MjpegServer:
    """An HTTP MJPEG camera (multipart/x-mixed-replace) that the test can switch off and on."""

    def __init__(self, port: int = 0) -> None:
        image = jpeg_frame("coffee")
        running = self.running = threading.Event()
        running.set()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                try:
                    while running.is_set():
                        self.wfile.write(head % len(image) + image + b"\r\n")
                        time.sleep(0.02)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.running.clear()  # open streams end
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mjpeg() -> Iterator[list[MjpegServer]]:
    servers = [MjpegServer()]
    yield servers
    servers[-1].stop()


def test_an_mjpeg_stream_that_drops_is_reconnected_with_backoff(
    mjpeg: list[MjpegServer],
) -> None:
    port = mjpeg[0].port
    frames: list[Frame] = []
    url = f"http://127.0.0.1:{port}/video.mjpg"
    loop = CaptureLoop(CaptureConfig(parse_source(url), None, backoff=FAST), frames.append)
    loop.start()
    try:
        wait_for(lambda: len(frames) >= 3, "frames from the stream")
        mjpeg[0].stop()
        wait_for(lambda: loop.status.failures >= 3, "failed reconnects")
        assert loop.status.state == "reconnecting" and loop.status.retry_in_secs == 0.2
        before = len(frames)
        mjpeg.append(MjpegServer(port))  # the camera comes back on the same address
        wait_for(lambda: len(frames) >= before + 3, "frames after the restart")
    finally:
        loop.stop()
    assert loop.status.reconnects >= 1
    assert frames[-1].image.shape == (400, 600, 3)  # coffee, decoded from the stream


# -- the module through the edge hub ----------------------------------------------------------


def test_the_module_sends_video_frames_and_stops_on_sigterm(video: Path, tmp_path: Path) -> None:
    routes = {
        "r": "FROM /messages/modules/camera/outputs/frames "
        'INTO BrokeredEndpoint("/modules/sink/inputs/frames")'
    }
    with edge_hub(tmp_path, None, {"routes": routes}) as hub:
        sink = Sink(hub)
        proc = start_module(
            hub,
            "camera",
            "modules.camera",
            tmp_path,
            CAMERA_SOURCE=str(video),
            CAMERA_FRAME_RATE="20",
            CAMERA_RESOLUTION="320x240",
        )
        try:
            msgs = sink.wait(lambda m: len(m) >= 5)
        finally:
            code = stop_module(proc)
            sink.close()
    assert code == 0, (tmp_path / "camera.log").read_text()[-2000:]
    first = msgs[0]
    assert first.content_type == "image/jpeg"
    assert _decode(first.data).shape == (240, 320, 3)
    indexes = [int(m.custom_properties["frameIndex"]) for m in msgs]
    assert indexes == sorted(indexes)
    assert {m.custom_properties["sourceFrame"] for m in msgs} <= {str(i) for i in range(10)}


class FakeClient:
    """Stands in for the edge hub connection: records sends and reported properties."""

    module_id = "camera"

    def __init__(self) -> None:
        self.on_twin_desired_properties_patch_received: Any = None
        self.reported: list[dict[str, Any]] = []
        self.sent: list[tuple[str, Any]] = []

    def connect(self, timeout: float) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def get_twin(self, timeout: float) -> dict[str, Any]:
        return {"desired": {"ReconnectInitialSecs": 0.05, "ReconnectMaxSecs": 0.2}}

    def patch_twin_reported_properties(self, patch: dict[str, Any], timeout: float) -> None:
        self.reported.append(patch)

    def send_message_to_output(self, message: Any, output: str, timeout: float) -> None:
        self.sent.append((output, message))

    def status(self) -> dict[str, Any]:
        statuses = [p["status"] for p in self.reported if "status" in p]
        return statuses[-1] if statuses else {}


def test_the_module_reports_reconnects_in_its_reported_properties(
    video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modules.camera.__main__ import CameraModule
    from modules.module_runtime import ModuleRuntime

    path = tmp_path / "later.avi"
    monkeypatch.setenv("CAMERA_SOURCE", str(path))  # not there yet
    monkeypatch.setenv("CAMERA_FRAME_RATE", "50")
    client = FakeClient()
    settings = CameraSettings()
    with ModuleRuntime("camera", client) as rt:  # type: ignore[arg-type]
        rt.on_settings(settings.apply, settings.reported)
        module = CameraModule(rt, settings)
        runner = threading.Thread(target=module.run)
        runner.start()
        try:
            wait_for(lambda: client.status().get("consecutiveFailures", 0) >= 3, "retries")
            status = client.status()
            assert status["state"] == "reconnecting" and "no such video file" in status["lastError"]
            assert runner.is_alive()  # waits for the source; never a crash loop
            path.write_bytes(video.read_bytes())
            wait_for(lambda: client.status().get("state") == "streaming", "streaming")
            wait_for(lambda: len(client.sent) >= 3, "frames")
        finally:
            rt.stopping.set()
            runner.join(20)
    assert not runner.is_alive()
    final = client.status()  # opened at last: not a reconnect, as it never streamed before
    assert final["consecutiveFailures"] == 0 and final["reconnects"] == 0
    assert {output for output, _m in client.sent} == {"frames"}
    assert client.reported[0]["ReconnectMaxSecs"] == 0.2  # the settings in effect


def test_a_missing_v4l2_device_is_retried_not_fatal() -> None:
    loop = CaptureLoop(CaptureConfig(parse_source("v4l2:57"), None, backoff=FAST), print)
    loop.start()
    try:
        wait_for(lambda: loop.status.failures >= 2, "two failed opens")
    finally:
        loop.stop()
    assert "cannot open /dev/video57" in (loop.status.last_error or "")
