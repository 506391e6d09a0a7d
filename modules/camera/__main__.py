"""``python -m modules.camera``: JPEG frames on output ``frames``.

Settings: twin desired ``FrameInterval`` (seconds between frames; env ``FRAME_INTERVAL``,
default 2) and ``Images`` (comma-separated subset of chelsea, coffee, astronaut, rocket; env
``CAMERA_IMAGES``). Each message: body = JPEG bytes, content type ``image/jpeg``, properties
``frameName`` and ``frameIndex``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from edgefleet.sdk.module_client import Message
from modules.camera.frames import FrameError, parse_photos
from modules.camera.frames import jpeg_frame as encode
from modules.module_runtime import ModuleRuntime, env_float, main_guard

OUTPUT = "frames"


class CameraSettings:
    def __init__(self) -> None:
        self.interval = max(0.01, env_float("FRAME_INTERVAL", 2.0))
        self.photos = parse_photos(os.environ.get("CAMERA_IMAGES"))

    def reported(self) -> dict[str, Any]:
        return {"FrameInterval": self.interval, "Images": ",".join(self.photos)}

    def apply(self, desired: dict[str, Any]) -> None:
        if "FrameInterval" in desired:
            self.interval = max(0.01, float(desired["FrameInterval"]))
        if "Images" in desired:
            try:
                self.photos = parse_photos(desired["Images"])
            except FrameError as exc:
                raise ValueError(str(exc)) from None


def run() -> None:
    settings = CameraSettings()
    cache: dict[str, bytes] = {}
    with ModuleRuntime("camera") as rt:
        rt.on_settings(settings.apply, settings.reported)
        index = 0
        while not rt.stopping.is_set():
            photos = settings.photos
            name = photos[index % len(photos)]
            if name not in cache:
                cache[name] = encode(name)
            message = Message(data=cache[name], content_type="image/jpeg")
            message.custom_properties.update({"frameName": name, "frameIndex": str(index)})
            if rt.send(message, OUTPUT):
                index += 1
            rt.stopping.wait(settings.interval)
        rt.log.info("sent %d frames", index)


if __name__ == "__main__":
    sys.exit(main_guard(run))
