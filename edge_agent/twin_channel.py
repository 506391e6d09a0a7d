"""How the agent reaches its twins: a small protocol the daemon is written against.

``HubChannel`` (edge_agent.hub_twin_channel) talks to the hub with the device SDK; ``LocalChannel``
reads the deployment from a manifest file (standalone mode, no hub) and writes the reported
properties to a JSON file. Both call ``on_desired(module)`` when a twin's desired state changed;
the daemon then fetches the full desired properties with ``get_desired``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edgefleet.files import atomic_write_json
from edgefleet.manifest import ManifestError, extract_modules_content, substitute

MethodHandler = Callable[[str, Any], tuple[int, Any]]
DesiredCallback = Callable[[str], None]

log = logging.getLogger("edgefleet.agent")


class TwinChannel(Protocol):
    device_id: str

    def start(self, on_desired: DesiredCallback, on_method: MethodHandler) -> None:
        """Connect in the background; must not block when the hub is unreachable."""
        ...

    def get_desired(self, module: str, timeout: float) -> dict[str, Any] | None:
        """Full desired properties of a module twin (``$version`` included), None if offline."""
        ...

    def report(self, patch: dict[str, Any]) -> bool:
        """Send a reported-properties patch of the ``$edgeAgent`` twin; False if not sent."""
        ...

    def close(self) -> None: ...


class LocalChannel:
    """Standalone mode: ``$edgeAgent``/``$edgeHub`` desired come from a manifest file on disk."""

    def __init__(self, device_id: str, manifest: Path, data_dir: Path, poll: float = 0.1) -> None:
        self.device_id = device_id
        self.manifest = manifest
        self.reported_path = data_dir / "reported.json"
        self.poll = poll
        self.reported: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mtime: float | None = None

    def start(self, on_desired: DesiredCallback, on_method: MethodHandler) -> None:
        def watch() -> None:
            while not self._stop.is_set():
                try:
                    mtime = self.manifest.stat().st_mtime_ns
                except OSError:
                    mtime = None
                if mtime is not None and mtime != self._mtime:
                    self._mtime = mtime
                    on_desired("$edgeAgent")
                self._stop.wait(self.poll)

        self._thread = threading.Thread(target=watch, name="local-channel", daemon=True)
        self._thread.start()

    def get_desired(self, module: str, timeout: float) -> dict[str, Any] | None:
        import json

        try:
            st = self.manifest.stat()
            text = self.manifest.read_text(encoding="utf-8")
        except OSError:
            return None
        try:
            doc = json.loads(text)
        except ValueError:
            import yaml

            try:
                doc = yaml.safe_load(text)
            except yaml.YAMLError:
                return {"$version": int(st.st_mtime), "$invalid": "manifest is not JSON/YAML"}
        try:
            mc = extract_modules_content(substitute(doc, braced_only=True))
        except ManifestError as exc:
            return {"$version": int(st.st_mtime), "$invalid": exc.description}
        section = mc.get(module) or {}
        desired = dict(section.get("properties.desired") or {})
        desired["$version"] = st.st_mtime_ns
        return desired

    def report(self, patch: dict[str, Any]) -> bool:
        """Merged and written to ``reported.json``; False (the agent retries) on a full disk."""
        _merge(self.reported, patch)
        try:
            atomic_write_json(self.reported_path, self.reported)
        except OSError as exc:
            log.warning("reported properties not written: %s", exc)
            return False
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (null deletes)."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = v
