"""Per-module restart-policy state kept in the data directory, so that backoff and ``failed``
continue where they were after the agent restarts or crashes (a crash-looping module must not
get a fresh restart budget from every agent restart).

The file is rewritten atomically on every change (temp file, fsync, ``os.replace``): a crash
leaves the old or the new state, never half of one. A corrupt or unreadable file is logged and
ignored: the agent starts with fresh counters rather than not at all.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from edgefleet.files import atomic_write_json

log = logging.getLogger("edgefleet.agent.restart_state")

FORMAT_VERSION = 1


class RestartStateStore:
    """``<data_dir>/restart-state.json``: ``{"version": 1, "modules": {name: entry}}``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "restart-state.json"
        self._lock = threading.Lock()
        self._written: dict[str, Any] | None = None

    def load(self) -> dict[str, dict[str, Any]]:
        """The saved entries by module name; ``{}`` when missing, corrupt or unreadable."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("restart state %s unreadable, starting fresh: %s", self.path, exc)
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            log.warning("restart state %s corrupt, starting fresh: %s", self.path, exc)
            return {}
        if (
            not isinstance(data, dict)
            or data.get("version") != FORMAT_VERSION
            or not isinstance(data.get("modules"), dict)
        ):
            log.warning("restart state %s has an unknown format, starting fresh", self.path)
            return {}
        out = {}
        for name, entry in data["modules"].items():
            if isinstance(name, str) and isinstance(entry, dict):
                out[name] = entry
            else:
                log.warning("restart state: entry for %r ignored (not an object)", name)
        return out

    def save(self, modules: dict[str, dict[str, Any]]) -> None:
        """Write the entries if they differ from the last write; errors are logged, not raised
        (a full disk must not stop the agent from keeping modules running)."""
        data = {"version": FORMAT_VERSION, "modules": modules}
        with self._lock:
            if data == self._written:
                return
            try:
                atomic_write_json(self.path, data)
            except OSError as exc:
                log.warning("restart state not saved: %s", exc)
                return
            self._written = data


def to_utc_text(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def from_utc_text(value: Any) -> datetime | None:
    """An aware datetime from saved text; None for anything else (a bad field is dropped)."""
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else None
