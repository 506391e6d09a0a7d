"""Counters of the hub's MQTT side in this process (``GET /messaging/stats``)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    """Counters of this process; ``latencies`` are creation-to-commit seconds of recent messages
    that carry a numeric ``$.ctime`` (unix seconds; the benchmark sets it)."""

    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))
    stored: int = 0
    window_stored: int = 0
    window_first: float | None = None
    window_last: float | None = None
    duplicates: int = 0
    rejected_too_large: int = 0
    rejected_unknown_device: int = 0
    malformed: int = 0
    batches: int = 0
    expired: int = 0
    prune_passes: int = 0

    def reset_window(self) -> None:
        """Start a new measurement window (latencies and first/last commit)."""
        self.latencies.clear()
        self.window_stored = 0
        self.window_first = self.window_last = None

    def count_batch(self, committed: float, inserted: int, offered: int) -> None:
        """One committed ingest batch: ``offered`` rows, of which ``inserted`` were new."""
        self.stored += inserted
        self.window_stored += inserted
        if self.window_first is None:
            self.window_first = committed
        self.window_last = committed
        self.duplicates += offered - inserted
        self.batches += 1

    def count_expired(self, count: int) -> None:
        self.expired += count

    def count_prune_pass(self) -> None:
        self.prune_passes += 1

    def json(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else None

        return {
            "latencyMs": {"count": len(lat), "p50": pct(0.5), "p99": pct(0.99)},
            "window": {
                "stored": self.window_stored,
                "firstCommit": self.window_first,
                "lastCommit": self.window_last,
            },
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejectedTooLarge": self.rejected_too_large,
            "rejectedUnknownDevice": self.rejected_unknown_device,
            "malformed": self.malformed,
            "batches": self.batches,
            "expired": self.expired,
            "prunePasses": self.prune_passes,
        }
