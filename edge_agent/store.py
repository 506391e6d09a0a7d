"""The last applied deployment, kept in the data directory so a reboot without the hub still
starts the modules (written atomically: a crash leaves the old or the new file, never half)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # owner-only: deployments carry registry credentials, provisioning results carry keys
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DeploymentStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "deployment.json"

    def save(
        self, agent_desired: dict[str, Any], hub_desired: dict[str, Any] | None, version: int | None
    ) -> None:
        atomic_write_json(
            self.path, {"version": version, "edgeAgent": agent_desired, "edgeHub": hub_desired}
        )

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and "edgeAgent" in data else None
