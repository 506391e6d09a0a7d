"""An HTTP answer as the edge hub's pure request handlers decide it (JSON body)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any

    def encoded(self) -> bytes:
        return json.dumps(self.body).encode()


def error(status: int, message: str) -> Answer:
    """``{"message": ...}``, the error shape of IoT Edge's APIs."""
    return Answer(status, {"message": message})
