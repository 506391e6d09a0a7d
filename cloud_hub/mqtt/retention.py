"""Telemetry retention: a background pruner that deletes expired device-to-cloud messages.

Two limits, both optional: an age (``message_retention_hours``, by ``enqueued_at``; default 168 h,
0 keeps forever) and a per-device count (``message_retention_count``, the newest N by sequence
number stay; default 0 = unlimited). Rows go in small batches, each its own short transaction,
with a pause in between, so the ingest writer (on SQLite the only other writer) never waits long.

With several hub processes on one PostgreSQL, the process holding the ``message-retention``
lease prunes (``cloud_hub/leases.py``); the others skip their passes.

Duplicate suppression is the unique (device id, message id) key of the stored rows: once a row is
pruned, a redelivery of that message id is stored again as a new message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Delete, delete, func, select

from cloud_hub.db import Database
from cloud_hub.leases import Lease
from cloud_hub.mqtt.tables import MessageRow
from edgefleet.utctime import utc_now

log = logging.getLogger(__name__)

DEFAULT_HOURS = 168.0
DEFAULT_INTERVAL_S = 300.0
DEFAULT_BATCH = 500


@dataclass(frozen=True)
class RetentionPolicy:
    """How long messages stay; ``hours`` and ``count`` of 0 mean no limit."""

    hours: float = DEFAULT_HOURS
    count: int = 0
    interval_s: float = DEFAULT_INTERVAL_S
    batch: int = DEFAULT_BATCH
    pause_s: float = 0.005

    def __post_init__(self) -> None:
        if self.hours < 0 or self.count < 0:
            raise ValueError("message retention hours and count must be >= 0")
        if self.interval_s <= 0 or self.batch < 1:
            raise ValueError("prune interval must be > 0 and batch >= 1")

    @property
    def enabled(self) -> bool:
        return self.hours > 0 or self.count > 0

    @classmethod
    def from_settings(cls, extra: Mapping[str, Any] | None) -> RetentionPolicy:
        """From ``HubSettings.model_extra`` (the ``hub serve`` options); absent keys: defaults."""
        extra = extra or {}

        def pick(key: str, default: float) -> float:
            value = extra.get(key)
            return default if value is None else float(value)

        return cls(
            hours=pick("message_retention_hours", DEFAULT_HOURS),
            count=int(pick("message_retention_count", 0)),
            interval_s=pick("message_prune_interval", DEFAULT_INTERVAL_S),
            batch=int(pick("message_prune_batch", DEFAULT_BATCH)),
        )


class MessagePruner:
    """Deletes expired messages at start and then every ``policy.interval_s`` (one thread)."""

    def __init__(
        self,
        db: Database,
        policy: RetentionPolicy,
        on_removed: Callable[[int], None] | None = None,
        on_pass: Callable[[], None] | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.db = db
        self.policy = policy
        self._on_removed = on_removed
        self._on_pass = on_pass
        self._lease = lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if not self.policy.enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="message-pruner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._lease is not None:
            self._lease.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # with several hub processes on one database, the one holding the lease prunes
                removed = self.prune_once() if self._lease is None or self._lease.held() else 0
                if removed:
                    log.info("message retention removed %d messages", removed)
            except Exception:  # noqa: BLE001 - a database hiccup; the next pass retries
                log.exception("pruning expired messages failed")
            if self._stop.wait(self.policy.interval_s):
                return

    # -- one pass -------------------------------------------------------------------------------

    def prune_once(self, now: datetime | None = None) -> int:
        """Apply both limits once; returns how many messages were deleted."""
        removed = 0
        if self.policy.hours > 0:
            cutoff = (now or utc_now()) - timedelta(hours=self.policy.hours)
            removed += self._expire_older_than(cutoff)
        if self.policy.count > 0:
            removed += self._cap_per_device(self.policy.count)
        if self._on_pass is not None and not self._stop.is_set():
            self._on_pass()
        return removed

    def _expire_older_than(self, cutoff: datetime) -> int:
        oldest = (
            select(MessageRow.seq)
            .where(MessageRow.enqueued_at < cutoff)
            .order_by(MessageRow.enqueued_at)
            .limit(self.policy.batch)
        )
        if self.db.dialect == "postgresql":  # a second hub's pruner takes other rows
            oldest = oldest.with_for_update(skip_locked=True)
        return self._drain(delete(MessageRow).where(MessageRow.seq.in_(oldest)))

    def _cap_per_device(self, keep: int) -> int:
        over = (
            select(MessageRow.device_id).group_by(MessageRow.device_id).having(func.count() > keep)
        )
        with self.db.read() as session:
            devices = list(session.scalars(over))
        removed = 0
        for device_id in devices:
            if self._stop.is_set():
                break
            newest_kept = (
                select(MessageRow.seq)
                .where(MessageRow.device_id == device_id)
                .order_by(MessageRow.seq.desc())
                .offset(keep - 1)
                .limit(1)
            )
            with self.db.read() as session:
                floor = session.scalar(newest_kept)
            if floor is None:
                continue
            oldest = (
                select(MessageRow.seq)
                .where(MessageRow.device_id == device_id, MessageRow.seq < floor)
                .order_by(MessageRow.seq)
                .limit(self.policy.batch)
            )
            removed += self._drain(delete(MessageRow).where(MessageRow.seq.in_(oldest)))
        return removed

    def _drain(self, statement: Delete) -> int:
        """Run a batch-limited delete until it removes nothing; one transaction per batch."""
        total = 0
        while not self._stop.is_set():
            with self.db.write() as session:
                result = session.execute(
                    statement, execution_options={"synchronize_session": False}
                )
            count = int(getattr(result, "rowcount", 0) or 0)
            if count <= 0:
                break
            total += count
            if self._on_removed is not None:
                self._on_removed(count)
            if count < self.policy.batch:
                break
            self._stop.wait(self.policy.pause_s)  # let the ingest writer in
        return total


__all__ = ["MessagePruner", "RetentionPolicy"]
