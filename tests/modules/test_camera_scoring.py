"""In-process scoring in the camera with the real EfficientNet-Lite0 (fp32, built once and cached):
the pipeline names the right classes, the module's results go through the edge hub, and
``edgefleet bench camera --json`` runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgefleet.sdk.module_client import Message
from modules.accelerators.classifier_config import ClassifierConfig
from modules.camera.capture import CaptureConfig, Frame
from modules.camera.outputs import score_messages
from modules.camera.pipeline import FramePipeline
from modules.camera.policy import Backoff, ThumbnailPolicy
from modules.camera.scorer import LocalScorer
from modules.camera.source import SourceSpec
from modules.camera.video import write_photo_video
from tests.support.edgehub import edge_hub
from tests.support.featurizer_models import cached_test_store
from tests.support.hub import edgefleet_cmd
from tests.support.modules import Sink, start_module, stop_module
from tests.support.mqtt import wait_until

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return cached_test_store(precisions=("fp32",))  # read only here


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, range]]:
    path = tmp_path_factory.mktemp("video") / "photos.avi"
    spans = write_photo_video(path, fps=10, seconds_per_photo=0.5, photos=("chelsea", "coffee"))
    return path, spans


def _photo(spans: dict[str, range], source_frame: int) -> str:
    return next(name for name, span in spans.items() if source_frame in span)


def test_the_pipeline_scores_a_video_into_the_right_classes(
    model_dir: Path, video: tuple[Path, dict[str, range]]
) -> None:
    path, spans = video
    scorer = LocalScorer(ClassifierConfig(model_dir=str(model_dir)))
    bodies: list[dict[str, Any]] = []

    def process(frame: Frame, pipeline: FramePipeline) -> None:
        for message, output in score_messages(
            frame, scorer, 5, pipeline.dropped, ThumbnailPolicy(None)
        ):
            assert output == "results"
            bodies.append(json.loads(message.data))

    capture = CaptureConfig(SourceSpec("file", str(path)), 1 / 20, loop=True, backoff=Backoff())
    pipeline = FramePipeline(capture, process, 2, lambda f: scorer.prepare(f.image))
    pipeline.start()
    try:
        assert wait_until(
            lambda: {_photo(spans, b["sourceFrame"]) for b in bodies} == {"chelsea", "coffee"}, 60
        ), f"results only for frames {[b['sourceFrame'] for b in bodies]}"
    finally:
        pipeline.stop()
        scorer.close()
    for body in bodies:
        best = body["top5"][0]["class_id"]
        expected = CAT_CLASSES if _photo(spans, body["sourceFrame"]) == "chelsea" else {ESPRESSO}
        assert best in expected, body
        assert body["model"] == "efficientnet-lite0" and body["accelerator"] == "cpu"
        assert body["latencyMs"] >= body["scoreMs"] > 0 and body["frameTime"].endswith("Z")
    assert "cat" in bodies[0]["top5"][0]["label"] or "espresso" in bodies[0]["top5"][0]["label"]


def _thumbnail_with_its_result(msgs: list[Message]) -> bool:
    results = {m.message_id for m in msgs if m.input_name == "results"}
    return any(m.input_name == "thumbnails" and m.correlation_id in results for m in msgs)


def test_the_module_scores_in_process_and_routes_results_and_thumbnails(
    tmp_path: Path, model_dir: Path, video: tuple[Path, dict[str, range]]
) -> None:
    path, spans = video
    routes = {
        "results": "FROM /messages/modules/camera/outputs/results "
        'INTO BrokeredEndpoint("/modules/sink/inputs/results")',
        "thumbs": "FROM /messages/modules/camera/outputs/thumbnails "
        'INTO BrokeredEndpoint("/modules/sink/inputs/thumbnails")',
    }
    with edge_hub(tmp_path, None, {"routes": routes}) as hub:
        sink = Sink(hub)
        proc = start_module(
            hub,
            "camera",
            "modules.camera",
            tmp_path,
            CAMERA_SOURCE=str(path),
            CAMERA_FRAME_RATE="5",
            CAMERA_SCORING="local",
            CAMERA_THUMBNAIL_THRESHOLD="0.05",
            CAMERA_THUMBNAIL_MAX_SIDE="96",
            CAMERA_THUMBNAIL_MAX_BYTES="4000",
            EDGEFLEET_MODEL_DIR=str(model_dir),
        )
        try:
            msgs = sink.wait(_thumbnail_with_its_result, timeout=120)
        finally:
            code = stop_module(proc)
            sink.close()
    assert code == 0, (tmp_path / "camera.log").read_text()[-2000:]
    results = [m for m in msgs if m.input_name == "results"]
    thumbs = [m for m in msgs if m.input_name == "thumbnails"]
    body = json.loads(results[0].data)
    assert body["droppedFrames"] >= 0 and body["sequence"] >= 0 and len(body["top5"]) == 5
    expected = CAT_CLASSES if _photo(spans, body["sourceFrame"]) == "chelsea" else {ESPRESSO}
    assert body["top5"][0]["class_id"] in expected
    assert results[0].custom_properties["topClassId"] == str(body["top5"][0]["class_id"])
    assert all(len(t.data) <= 4000 and t.content_type == "image/jpeg" for t in thumbs)
    by_id = {m.message_id: json.loads(m.data) for m in results}
    for thumb in thumbs:
        if thumb.correlation_id in by_id:  # its result names it, with its size
            assert by_id[thumb.correlation_id]["thumbnail"]["bytes"] == len(thumb.data)


def test_bench_camera_reports_latency_fps_drops_and_cpu_as_json(
    tmp_path: Path, model_dir: Path
) -> None:
    args = ["bench", "camera", "--fps", "10", "--seconds", "2", "--precision", "fp32"]
    args += ["--accelerator", "cpu", "--model-dir", str(model_dir), "--json"]
    done = subprocess.run(
        edgefleet_cmd(*args), capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["frames_scored"] > 0 and report["frames_captured"] >= report["frames_scored"]
    assert set(report["latency_capture_to_result"]) == {"p50_ms", "p95_ms", "p99_ms", "mean_ms"}
    assert 0 <= report["dropped_share"] <= 1 and report["cpu"]["cores_busy"] > 0
    assert report["machine"]["vector_units"] in ("avx512", "avx2", "sse")
    assert report["precision"] == "fp32" and isinstance(report["goal"]["met"], bool)
