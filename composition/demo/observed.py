"""What the hub stored for the demo device, folded into counts and the latest results."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from composition.demo.manifest import SCORING, SENSOR


@dataclass
class Result:
    frame: str
    class_id: int
    label: str
    score: float
    latency_ms: float | None
    device_ms: float | None

    def json(self) -> dict[str, Any]:
        return {
            "frame": self.frame,
            "classId": self.class_id,
            "label": self.label,
            "score": round(self.score, 4),
            "latencyMs": self.latency_ms,
            "deviceMs": self.device_ms,
        }


@dataclass
class Observed:
    """What the hub stored for the demo device, read through ``GET /devices/{id}/messages``."""

    since: str | None = None
    by_module: dict[str, int] = field(default_factory=dict)
    latest_reading: dict[str, Any] | None = None
    results: dict[str, Result] = field(default_factory=dict)
    result_count: int = 0
    last: Result | None = None

    @property
    def total(self) -> int:
        return sum(self.by_module.values())

    def add(self, message: dict[str, Any]) -> None:
        module = str(message.get("moduleId") or "(device)")
        self.by_module[module] = self.by_module.get(module, 0) + 1
        if message.get("bodyEncoding") != "utf-8":
            return
        try:
            body = json.loads(message.get("body") or "")
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        if module == SENSOR:
            self.latest_reading = body
        elif module == SCORING and isinstance(body.get("top5"), list) and body["top5"]:
            best = body["top5"][0]
            result = Result(
                str(body.get("frame") or "?"),
                int(best.get("class_id", -1)),
                str(best.get("label", "")),
                float(best.get("score", 0.0)),
                body.get("latencyMs"),
                body.get("deviceMs"),
            )
            self.results[result.frame] = result
            self.result_count += 1
            self.last = result
