"""Forwarding upstream: a thread that moves stored messages into the upstream client's durable
outbox, best priority first, then arrival, and drops those past their time to live.

At most ``window`` messages wait in the outbox, so priorities and TTLs still apply during an
outage. A message leaves the store only after the hand-over: a crash in between sends it again
(at least once).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from edge_agent.edgehub.store_and_forward import MessageStore, Stored
from edge_agent.storage_monitor import WriteEvents
from edgefleet import protocol as p
from edgefleet.diskfull import is_disk_full

log = logging.getLogger("edgefleet.edgehub")

EXPIRY_INTERVAL_SECS = 1.0
WRITER = "upstreamForwarding"


def module_runs(batch: list[Stored]) -> list[tuple[str, list[p.Message]]]:
    """Split ``batch`` into runs of consecutive messages of one module, keeping the order."""
    runs: list[tuple[str, list[p.Message]]] = []
    for stored in batch:
        if not runs or runs[-1][0] != stored.module:
            runs.append((stored.module, []))
        bag = p.decode_property_bag(stored.bag)
        runs[-1][1].append(p.Message.from_property_bag(stored.payload, bag))
    return runs


class Forwarder:
    """``upstream`` is the agent's ``DeviceClient`` or ``None`` (messages then wait for TTL)."""

    def __init__(
        self, store: MessageStore, upstream: Any, window: int, events: WriteEvents | None = None
    ) -> None:
        self._store = store
        self._events = events
        self._upstream = upstream
        self._window = window
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._online = False
        self._waiting_for_space = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edgehub-fwd", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._store.changed:
            self._store.changed.notify_all()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        last_expiry = 0.0
        while not self._stop.is_set():
            now = time.time()
            if now - last_expiry >= EXPIRY_INTERVAL_SECS:
                last_expiry = now
                try:
                    self._store.expire(now)
                except Exception:  # noqa: BLE001
                    log.exception("expiring stored messages failed")
            up = self._upstream
            online = up is not None and bool(up.connected)
            if online != self._online:
                self._online = online
                log.info("upstream %s", "reachable" if online else "unreachable")
            if not online:
                self._stop.wait(0.1)
                continue
            room = self._window - len(up.outbox)
            if room <= 0:
                self._stop.wait(0.005)
                continue
            batch = [s for s in self._store.peek(room) if s.expires > now]
            if not batch:
                self._store.wait(0.2)
                continue
            try:
                self._hand_over(up, batch)
            except Exception as exc:  # noqa: BLE001 - stays in the store; retried
                if self._events is not None:
                    self._events.failed(WRITER, exc)
                if is_disk_full(exc):
                    if not self._waiting_for_space:
                        log.warning("forwarding upstream waits for disk space: %s", exc)
                    self._waiting_for_space = True
                else:
                    log.exception("handing messages to the upstream client failed")
                self._stop.wait(0.5)
                continue
            self._waiting_for_space = False
            if self._events is not None:
                self._events.succeeded(WRITER)

    def _hand_over(self, up: Any, batch: list[Stored]) -> None:
        """Move a batch into the upstream client's durable outbox, keeping the order."""
        for module_id, messages in module_runs(batch):
            up.module(module_id).send_messages(messages)
        self._store.remove([s.seq for s in batch])
