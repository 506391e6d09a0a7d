"""The adapter of ``storage_status``: samples the data directory's file system, collects the
writes that failed for lack of space, and tells the agent when its report should change."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edge_agent import storage_status as ss
from edgefleet.diskfull import is_disk_full

log = logging.getLogger("edgefleet.agent.storage")

SAMPLE_SECS = 5.0
REFRESH_SECS = 60.0  # free bytes alone are re-reported at most this often


class WriteEvents(Protocol):
    """What writers of the data directory tell the monitor."""

    def failed(self, writer: str, exc: BaseException) -> None: ...

    def succeeded(self, writer: str) -> None: ...


def disk_sample(path: Path) -> ss.DiskSample:
    """Free and total bytes of the file system holding ``path``. Free is what this process may
    write: root may use the blocks a file system reserves for it."""
    st = os.statvfs(path)
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return ss.DiskSample(free_bytes=blocks * st.f_frsize, total_bytes=st.f_blocks * st.f_frsize)


class StorageMonitor:
    def __init__(
        self,
        data_dir: Path,
        on_change: Callable[[], None] | None = None,
        sample: Callable[[Path], ss.DiskSample] = disk_sample,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.on_change = on_change
        self._sample = sample
        self._lock = threading.Lock()
        self._failures: dict[str, ss.Failure] = {}
        self._state: ss.StorageState | None = None
        self._shown: ss.StorageState | None = None

    # --- events from writers (any thread) -------------------------------------------------------

    def failed(self, writer: str, exc: BaseException) -> None:
        """A write of ``writer`` failed; only a full disk counts here."""
        if not is_disk_full(exc):
            return
        free = self._safe_sample().free_bytes
        with self._lock:
            self._failures[writer] = ss.Failure(writer, str(exc) or type(exc).__name__, free)
        self.refresh()

    def succeeded(self, writer: str) -> None:
        if writer not in self._failures:  # the common case, without the lock
            return
        with self._lock:
            self._failures.pop(writer, None)
        self.refresh()

    # --- state ----------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Sample the disk and decide; wakes the agent's report when it should change."""
        sample = self._safe_sample()
        with self._lock:
            prev = self._state
            new = ss.decide(prev, sample, self._failures.values(), time.time())
            self._state = new
            show = ss.worth_reporting(self._shown, new, REFRESH_SECS)
            if show:
                self._shown = new
        if prev is None or prev.full != new.full:
            if new.full:
                reason = ", ".join(f"{f.writer}: {f.error}" for f in new.failures) or "0 free"
                log.warning("data directory %s is full (%s)", self.data_dir, reason)
            elif prev is not None:
                log.info("data directory %s has space again", self.data_dir)
        if show and self.on_change is not None:
            self.on_change()

    def reported(self) -> dict[str, Any]:
        """The ``storage`` object of the reported properties."""
        if self._shown is None:
            self.refresh()
        with self._lock:
            shown = self._shown
        assert shown is not None
        return ss.reported(shown, str(self.data_dir))

    @property
    def full(self) -> bool:
        return self._state is not None and self._state.full

    def run(self, stop: threading.Event, every: float = SAMPLE_SECS) -> None:
        """Sample every ``every`` seconds until ``stop`` (a thread of the agent)."""
        while not stop.wait(every):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a sampling hiccup must not end the thread
                log.debug("storage sample failed", exc_info=True)

    def _safe_sample(self) -> ss.DiskSample:
        try:
            return self._sample(self.data_dir)
        except OSError:
            return ss.DiskSample(free_bytes=0, total_bytes=0)
