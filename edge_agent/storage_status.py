"""The data directory's storage condition, decided from disk statistics and failed writes.

Pure: ``decide`` turns the last state, a disk sample and the writes that failed for lack of
space into the new state; ``reported`` gives the ``storage`` object of the ``$edgeAgent``
reported properties. The disk is ``full`` while free space is zero or a write that failed for
lack of space still stands: it stands until the same writer succeeds (the adapter forgets it
then) or until ``resume_bytes`` more are free than when it failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgefleet.utctime import utc_text

RESUME_BYTES = 1 << 20

# writers whose failure refuses something a user sends (the rest only fail to save)
REFUSES = {"edgeHubStore": "upstreamMessages", "deployment": "deployments"}


@dataclass(frozen=True)
class DiskSample:
    free_bytes: int  # what the agent's process may still write
    total_bytes: int


@dataclass(frozen=True)
class Failure:
    """The newest write of ``writer`` that failed for lack of space."""

    writer: str
    error: str
    free_bytes: int  # free bytes when it failed


@dataclass(frozen=True)
class StorageState:
    full: bool
    since: float  # unix time the current state began
    sampled_at: float
    free_bytes: int
    total_bytes: int
    failures: tuple[Failure, ...] = ()

    @property
    def writers(self) -> tuple[str, ...]:
        return tuple(f.writer for f in self.failures)


def standing(failures: Iterable[Failure], free_bytes: int, resume_bytes: int) -> list[Failure]:
    """The failures that still hold: no ``resume_bytes`` have been freed since each."""
    kept = [f for f in failures if free_bytes < f.free_bytes + resume_bytes]
    return sorted(kept, key=lambda f: f.writer)


def decide(
    prev: StorageState | None,
    sample: DiskSample,
    failures: Iterable[Failure],
    now: float,
    resume_bytes: int = RESUME_BYTES,
) -> StorageState:
    held = tuple(standing(failures, sample.free_bytes, resume_bytes))
    full = bool(held) or sample.free_bytes <= 0
    since = prev.since if prev is not None and prev.full == full else now
    return StorageState(full, since, now, sample.free_bytes, sample.total_bytes, held)


def worth_reporting(shown: StorageState | None, new: StorageState, refresh_secs: float) -> bool:
    """A new state, other failed writers, or figures older than ``refresh_secs`` (free bytes
    change with every write: they alone do not make a report)."""
    if shown is None or shown.full != new.full or shown.writers != new.writers:
        return True
    return new.sampled_at - shown.sampled_at >= refresh_secs


def reported(state: StorageState, data_dir: str) -> dict[str, Any]:
    """The ``storage`` object of the ``$edgeAgent`` reported properties."""
    refusing = sorted({REFUSES[f.writer] for f in state.failures if f.writer in REFUSES})
    return {
        "state": "full" if state.full else "ok",
        "dataDir": data_dir,
        "freeBytes": state.free_bytes,
        "totalBytes": state.total_bytes,
        "sinceUtc": utc_text(datetime.fromtimestamp(state.since, UTC)),
        "refusing": refusing,
        "failedWrites": list(state.writers),
        "lastError": _error(state.failures[-1]) if state.failures else None,
    }


def _error(failure: Failure) -> str:
    return f"{failure.writer}: {failure.error}"
