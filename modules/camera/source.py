"""What a camera ``Source`` setting names, and the other capture settings' syntax (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from edgefleet.digits import ascii_uint

SourceKind = Literal["photos", "file", "url", "device"]

STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
_DEVICE_PATH = re.compile(r"^/dev/video(\d+)$")
_RESOLUTION = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


class SettingError(ValueError):
    """A camera setting that cannot be used; the message names the setting."""


@dataclass(frozen=True)
class SourceSpec:
    kind: SourceKind
    target: str = ""  # file path, URL or device path
    index: int | None = None  # V4L2 device number

    @property
    def live(self) -> bool:
        """Live sources run at their own pace; files and photos are paced by the frame rate."""
        return self.kind in ("url", "device")

    def describe(self) -> str:
        """The source for reported properties, with any URL password masked."""
        if self.kind == "url":
            return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", self.target)
        return self.target or self.kind


def parse_source(value: str | None) -> SourceSpec:
    """``photos`` (default), a file path (``file:`` prefix optional), an ``rtsp://``/``http://``
    URL (MJPEG over HTTP, RTSP), or a V4L2 device (``/dev/video0``, ``v4l2:0`` or ``0``)."""
    text = (value or "").strip()
    if not text or text == "photos":
        return SourceSpec("photos")
    lower = text.lower()
    if lower.startswith(STREAM_SCHEMES):
        return SourceSpec("url", text)
    if lower.startswith("v4l2:"):
        text = text[5:].strip()
        if not text:
            raise SettingError("Source: v4l2: needs a device number or path")
    number = ascii_uint(text)
    if number is not None:
        return SourceSpec("device", f"/dev/video{number}", number)
    match = _DEVICE_PATH.match(text)
    if match:
        return SourceSpec("device", text, int(match.group(1)))
    if lower.startswith("file:"):
        text = text[5:].removeprefix("//")
        if not text:
            raise SettingError("Source: file: needs a path")
    if "://" in text:
        raise SettingError(f"Source: unsupported URL scheme in {text!r} (rtsp, http, https)")
    return SourceSpec("file", text)


def parse_resolution(value: object) -> tuple[int, int] | None:
    """``"640x480"`` -> (640, 480); empty/None/"native" -> None (keep the source's size)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "native")):
        return None
    match = _RESOLUTION.match(str(value))
    if not match:
        raise SettingError(f"Resolution: expected WIDTHxHEIGHT, got {value!r}") from None
    width, height = int(match.group(1)), int(match.group(2))
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise SettingError(f"Resolution: {width}x{height} is outside 16..8192 pixels a side")
    return width, height


def parse_frame_rate(value: object) -> float:
    try:
        rate = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SettingError(f"FrameRate: expected frames per second, got {value!r}") from None
    if not 0.01 <= rate <= 240:
        raise SettingError(f"FrameRate: {rate} is outside 0.01..240 frames per second")
    return rate


def parse_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise SettingError(f"{name}: expected true or false, got {value!r}") from None
