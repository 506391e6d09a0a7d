"""``python -m modules.camera``: frames from photos, a video file, an RTSP/HTTP MJPEG URL or a
V4L2 device; sent as JPEG on output ``frames``, or (``Scoring: local``) scored in process with
results on output ``results`` and optional thumbnails on ``thumbnails``.

Settings are twin desired properties with environment defaults (see ``settings.ENV_NAMES`` and
docs/camera.md); the scorer is configured like the scoring module (``SCORING_MODEL``,
``SCORING_ACCELERATOR``, ``SCORING_PRECISION``, ``EDGEFLEET_FPGA_DEVICE``, ``EDGEFLEET_MODEL_DIR``,
``SCORING_HEAD``). Reported properties: the settings in effect plus ``status`` (capture state,
reconnects, frames captured/dropped/processed).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from modules.accelerators.classifier_config import ClassifierConfig
from modules.camera.capture import CaptureConfig, Frame
from modules.camera.outputs import (
    FRAMES,
    frame_message,
    score_messages,
    status_block,
    status_changed,
)
from modules.camera.pipeline import FramePipeline
from modules.camera.scorer import FrameScorer, open_frame_scorer
from modules.camera.settings import CameraConfig, CameraSettings
from modules.camera.source import SettingError
from modules.module_runtime import ModuleRuntime, env_float, main_guard

COUNTER_REPORT_SECS = env_float("CAMERA_STATUS_INTERVAL", 10.0)


class CameraModule:
    def __init__(self, rt: ModuleRuntime, settings: CameraSettings) -> None:
        self.rt = rt
        self.settings = settings
        self.scorer: FrameScorer | None = None
        self.scorer_config: ClassifierConfig | None = None
        self.scoring_error: str | None = None

    def _scorer_for(self, config: CameraConfig) -> FrameScorer | None:
        """The in-process scorer when ``Scoring`` is local (opened once, kept across changes)."""
        if config.scoring != "local":
            return None
        wanted = ClassifierConfig.from_env()
        if self.scorer is None or self.scorer_config != wanted:
            from modules.accelerators.model_store import StoreError
            from modules.accelerators.session import AcceleratorError

            self.close()
            try:
                self.scorer = open_frame_scorer(wanted)
                self.scorer_config = wanted
                self.scoring_error = None
                self.rt.log.info("scoring in process: %s", self.scorer.describe())
            except (AcceleratorError, StoreError, OSError, ValueError) as exc:
                self.scoring_error = f"cannot open {wanted.model} on {wanted.accelerator}: {exc}"
                self.rt.log.error("%s", self.scoring_error)
                return None
        return self.scorer

    def pipeline(self, config: CameraConfig) -> FramePipeline | None:
        scorer = self._scorer_for(config)
        if config.scoring == "local" and scorer is None:
            return None  # reported as scoringError; a settings change tries again

        def process(frame: Frame, pipeline: FramePipeline) -> None:
            if scorer is None:
                self.rt.send(frame_message(frame), FRAMES)
                return
            for message, output in score_messages(
                frame, scorer, config.top_k, pipeline.dropped, config.thumbnails
            ):
                self.rt.send(message, output)

        capture = CaptureConfig(
            config.source,
            config.interval,
            config.loop,
            config.resolution,
            config.photos,
            config.backoff,
        )
        prepare = (lambda frame: scorer.prepare(frame.image)) if scorer is not None else None
        return FramePipeline(capture, process, config.queue_size, prepare)

    def run(self) -> None:
        rt = self.rt
        while not rt.stopping.is_set():
            generation = self.settings.generation
            config = self.settings.config
            pipeline = self.pipeline(config)
            if pipeline is not None:
                pipeline.start()
                rt.log.info("capturing from %s", config.source.describe())
            last: dict[str, Any] | None = None
            last_time = 0.0
            try:
                while not rt.stopping.is_set() and self.settings.generation == generation:
                    if pipeline is not None:
                        block = status_block(pipeline.status(), pipeline.stats(), None)
                    else:
                        block = {"state": "error", "scoringError": self.scoring_error}
                    now = time.monotonic()
                    if status_changed(last, block) or (
                        block != last and now - last_time >= COUNTER_REPORT_SECS
                    ):
                        # short: a status report in flight must not outlast a stop
                        rt.report({"status": block}, timeout=2.0)
                        last, last_time = block, now
                    rt.stopping.wait(0.25)
            finally:
                if pipeline is not None:
                    pipeline.stop()
                    stats = pipeline.stats()
                    rt.log.info(
                        "captured %d frames, processed %d, dropped %d",
                        stats.captured,
                        stats.processed,
                        stats.dropped,
                    )

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()
            self.scorer = None
            self.scorer_config = None


def run() -> None:
    try:
        settings = CameraSettings()
    except SettingError as exc:
        print(f"error: {exc} (from the environment)", file=sys.stderr)
        raise SystemExit(2) from None
    with ModuleRuntime("camera") as rt:
        rt.on_settings(settings.apply, settings.reported)
        module = CameraModule(rt, settings)
        try:
            module.run()
        finally:
            module.close()


if __name__ == "__main__":
    sys.exit(main_guard(run))
