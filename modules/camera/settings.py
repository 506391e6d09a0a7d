"""The camera's settings: environment defaults, then twin desired properties (validated as a
whole; a bad patch changes nothing)."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from modules.camera.frames import FrameError, parse_photos
from modules.camera.policy import Backoff, ThumbnailPolicy
from modules.camera.source import (
    SettingError,
    SourceSpec,
    parse_bool,
    parse_frame_rate,
    parse_resolution,
    parse_source,
)

SCORING_MODES = ("off", "local")

# twin property -> environment variable
ENV_NAMES = {
    "Source": "CAMERA_SOURCE",
    "FrameInterval": "FRAME_INTERVAL",
    "FrameRate": "CAMERA_FRAME_RATE",
    "Resolution": "CAMERA_RESOLUTION",
    "Loop": "CAMERA_LOOP",
    "Images": "CAMERA_IMAGES",
    "Scoring": "CAMERA_SCORING",
    "TopK": "SCORING_TOP_K",
    "QueueSize": "CAMERA_QUEUE_SIZE",
    "ThumbnailThreshold": "CAMERA_THUMBNAIL_THRESHOLD",
    "ThumbnailMaxSide": "CAMERA_THUMBNAIL_MAX_SIDE",
    "ThumbnailMaxBytes": "CAMERA_THUMBNAIL_MAX_BYTES",
    "ReconnectInitialSecs": "CAMERA_RECONNECT_INITIAL",
    "ReconnectMaxSecs": "CAMERA_RECONNECT_MAX",
}


@dataclass(frozen=True)
class CameraConfig:
    source: SourceSpec = SourceSpec("photos")
    interval: float = 2.0  # seconds between frames
    resolution: tuple[int, int] | None = None
    loop: bool = True
    photos: tuple[str, ...] = ()
    scoring: str = "off"
    top_k: int = 5
    queue_size: int = 2
    thumbnails: ThumbnailPolicy = ThumbnailPolicy()
    backoff: Backoff = Backoff()

    def reported(self) -> dict[str, Any]:
        return {
            "Source": self.source.describe(),
            "FrameInterval": self.interval,
            "FrameRate": round(1.0 / self.interval, 3),
            "Resolution": f"{self.resolution[0]}x{self.resolution[1]}" if self.resolution else None,
            "Loop": self.loop,
            "Images": ",".join(self.photos),
            "Scoring": self.scoring,
            "TopK": self.top_k,
            "QueueSize": self.queue_size,
            "ThumbnailThreshold": self.thumbnails.threshold,
            "ThumbnailMaxSide": self.thumbnails.max_side,
            "ThumbnailMaxBytes": self.thumbnails.max_bytes,
            "ReconnectInitialSecs": self.backoff.initial,
            "ReconnectMaxSecs": self.backoff.maximum,
        }


def _number(name: str, value: object, low: float, high: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SettingError(f"{name}: expected a number, got {value!r}") from None
    if not low <= number <= high:
        raise SettingError(f"{name}: {number} is outside {low}..{high}")
    return number


def apply_settings(config: CameraConfig, desired: Mapping[str, Any]) -> CameraConfig:
    """``config`` with the recognised properties of ``desired`` applied (pure; raises
    ``SettingError`` naming the first bad property)."""
    new = config
    if "Source" in desired:
        new = replace(new, source=parse_source(desired["Source"]))
    if "FrameInterval" in desired:
        new = replace(new, interval=_number("FrameInterval", desired["FrameInterval"], 0.004, 3600))
    if "FrameRate" in desired and desired["FrameRate"] not in (None, ""):
        new = replace(new, interval=1.0 / parse_frame_rate(desired["FrameRate"]))
    if "Resolution" in desired:
        new = replace(new, resolution=parse_resolution(desired["Resolution"]))
    if "Loop" in desired:
        new = replace(new, loop=parse_bool("Loop", desired["Loop"]))
    if "Images" in desired:
        try:
            new = replace(new, photos=tuple(parse_photos(desired["Images"])))
        except FrameError as exc:
            raise SettingError(f"Images: {exc}") from None
    if "Scoring" in desired:
        mode = str(desired["Scoring"] or "off").strip().lower()
        if mode not in SCORING_MODES:
            raise SettingError(f"Scoring: expected one of {', '.join(SCORING_MODES)}, got {mode!r}")
        new = replace(new, scoring=mode)
    if "TopK" in desired:
        new = replace(new, top_k=int(_number("TopK", desired["TopK"], 1, 1000)))
    if "QueueSize" in desired:
        new = replace(new, queue_size=int(_number("QueueSize", desired["QueueSize"], 1, 1000)))
    thumbs = new.thumbnails
    if "ThumbnailThreshold" in desired:
        value = desired["ThumbnailThreshold"]
        threshold = None if value in (None, "") else _number("ThumbnailThreshold", value, 0, 1)
        thumbs = replace(thumbs, threshold=threshold)
    if "ThumbnailMaxSide" in desired:
        side = int(_number("ThumbnailMaxSide", desired["ThumbnailMaxSide"], 16, 4096))
        thumbs = replace(thumbs, max_side=side)
    if "ThumbnailMaxBytes" in desired:
        size = int(_number("ThumbnailMaxBytes", desired["ThumbnailMaxBytes"], 256, 4 << 20))
        thumbs = replace(thumbs, max_bytes=size)
    backoff = new.backoff
    if "ReconnectInitialSecs" in desired:
        initial = _number("ReconnectInitialSecs", desired["ReconnectInitialSecs"], 0.01, 600)
        backoff = replace(backoff, initial=initial)
    if "ReconnectMaxSecs" in desired:
        maximum = _number("ReconnectMaxSecs", desired["ReconnectMaxSecs"], 0.01, 3600)
        backoff = replace(backoff, maximum=maximum)
    if backoff.maximum < backoff.initial:
        raise SettingError("ReconnectMaxSecs: must not be below ReconnectInitialSecs")
    return replace(new, thumbnails=thumbs, backoff=backoff)


def config_from_env(env: Mapping[str, str] | None = None) -> CameraConfig:
    env = os.environ if env is None else env
    values = {name: env[var] for name, var in ENV_NAMES.items() if env.get(var, "") != ""}
    return apply_settings(CameraConfig(photos=tuple(parse_photos(None))), values)


class CameraSettings:
    """The effective config, shared by the twin callback thread and the main loop. ``generation``
    changes whenever the capture pipeline has to be rebuilt."""

    def __init__(self, config: CameraConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config or config_from_env()
        self.generation = 0

    @property
    def config(self) -> CameraConfig:
        with self._lock:
            return self._config

    def apply(self, desired: dict[str, Any]) -> None:
        with self._lock:
            new = apply_settings(self._config, desired)
            if asdict(new) != asdict(self._config):
                self._config = new
                self.generation += 1

    def reported(self) -> dict[str, Any]:
        return self.config.reported()
