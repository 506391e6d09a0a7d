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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from edge_agent.planner import RestartRecord
from edge_agent.storage_monitor import WriteEvents
from edgefleet.files import atomic_write_json
from edgefleet.utctime import parse_utc_text, utc_text

log = logging.getLogger("edgefleet.agent.restart_state")

FORMAT_VERSION = 1
WRITER = "restartState"


class RestartStateStore:
    """``<data_dir>/restart-state.json``: ``{"version": 1, "modules": {name: entry}}``."""

    def __init__(self, data_dir: Path, events: WriteEvents | None = None) -> None:
        self.path = Path(data_dir) / "restart-state.json"
        self._events = events
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
                if self._events is not None:
                    self._events.failed(WRITER, exc)
                return
            self._written = data
        if self._events is not None:
            self._events.succeeded(WRITER)


def entry_of(rec: RestartRecord) -> dict[str, Any]:
    """The saved form of a module's restart record."""
    return {
        "specHash": rec.spec_hash,
        "restartCount": rec.restart_count,
        "lastRestartTimeUtc": _text(rec.last_restart),
        "lastStartTimeUtc": _text(rec.started_at),
        "lastExitTimeUtc": _text(rec.finished_at),
        "exitCode": rec.exit_code,
        "running": rec.running,
        "status": rec.status,
        "description": rec.description,
        "failures": rec.failures,
        "backoffUntilUtc": _text(rec.backoff_until),
        "imageHash": rec.image_hash,
    }


def record_of(entry: dict[str, Any], backoff_max: float, now: datetime) -> RestartRecord:
    """A restart record from its saved form, at ``now`` (aware UTC); raises ValueError for an
    entry of the wrong shape."""

    def num(key: str) -> int:
        value = entry.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{key}: {value!r}")
        return value

    def text(key: str) -> str:
        value = entry.get(key, "")
        if not isinstance(value, str):
            raise ValueError(f"{key}: {value!r}")
        return value

    def when(key: str) -> datetime | None:
        # a clock that went back (no RTC after a reboot) must not hold a module for years
        t = _time(entry.get(key))
        return min(t, now) if t is not None else None

    code = entry.get("exitCode")
    if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
        raise ValueError(f"exitCode: {code!r}")
    until = _time(entry.get("backoffUntilUtc"))
    if until is not None:  # what was left of the backoff, at most one backoff_max
        until = now + timedelta(seconds=min(max((until - now).total_seconds(), 0.0), backoff_max))
    running = entry.get("running") is True
    finished_at = when("lastExitTimeUtc")
    return RestartRecord(
        restart_count=num("restartCount"),
        last_restart=when("lastRestartTimeUtc"),
        status=text("status") or "unknown",
        description=text("description"),
        failures=num("failures"),
        backoff_until=until,
        exit_code=code,
        started_at=when("lastStartTimeUtc"),
        finished_at=finished_at,
        image_hash=text("imageHash"),
        spec_hash=text("specHash"),
        running=running,
        resumed=not running and finished_at is not None and code is not None,
    )


def _text(t: datetime | None) -> str | None:
    return utc_text(t) if t is not None else None


def _time(value: Any) -> datetime | None:
    """A time from saved text; None for anything else (a bad field is dropped)."""
    if not isinstance(value, str):
        return None
    try:
        return parse_utc_text(value)
    except ValueError:
        return None
