"""The last applied deployment, kept in the data directory so a reboot without the hub still
starts the modules (written atomically: a crash leaves the old or the new file, never half;
not written when unchanged, so re-applying it after a restart needs no disk space)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgefleet.files import atomic_write_json


class DeploymentStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "deployment.json"

    def save(
        self, agent_desired: dict[str, Any], hub_desired: dict[str, Any] | None, version: int | None
    ) -> None:
        doc = {"version": version, "edgeAgent": agent_desired, "edgeHub": hub_desired}
        if self.load() == doc:
            return
        atomic_write_json(self.path, doc)

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and "edgeAgent" in data else None
