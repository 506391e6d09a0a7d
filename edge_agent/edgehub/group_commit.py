"""Group commit into the store-and-forward queue.

A message bound upstream counts as delivered once it is committed to the store: the module's
PUBACK waits for the future ``add`` returns. Every such message that arrives in one turn of the
event loop goes into the store in one transaction. A failed commit fails every future of the turn
with ``Refused``: 507 when the disk is full, 503 for any other store failure.
"""

from __future__ import annotations

import asyncio
import logging

from edge_agent.edgehub.store_and_forward import Item, MessageStore
from edge_agent.storage_monitor import WriteEvents
from edgefleet.diskfull import is_disk_full

log = logging.getLogger("edgefleet.edgehub")

WRITER = "edgeHubStore"


class Refused(Exception):
    """The edge hub did not store a message; ``status`` follows HTTP (507, 503)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def refusal(exc: BaseException) -> Refused:
    """What a module is told about a failed commit."""
    if is_disk_full(exc):
        return Refused(507, f"edge hub storage is full: message not stored ({exc})")
    return Refused(503, f"edge hub store unavailable: message not stored ({exc})")


class GroupCommit:
    """Collects items in the loop thread; commits them at the end of the loop turn."""

    def __init__(
        self,
        store: MessageStore,
        loop: asyncio.AbstractEventLoop,
        events: WriteEvents | None = None,
    ) -> None:
        self._store = store
        self._loop = loop
        self._events = events
        self._pending: list[tuple[Item, asyncio.Future[None]]] = []
        self.refused = 0
        self._refusing = False

    def add(self, item: Item) -> asyncio.Future[None]:
        """Queue ``item`` for this turn's transaction; the future resolves once it is committed."""
        future = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append((item, future))
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        try:
            self._store.put_many([item for item, _ in pending])
        except Exception as exc:  # noqa: BLE001 - refused: the module keeps the message
            self.refused += len(pending)
            if self._events is not None:
                self._events.failed(WRITER, exc)
            refused = refusal(exc)
            if not self._refusing:  # once per episode: modules retry often
                log.warning("refusing messages: %s", refused.reason)
            self._refusing = True
            for _, fut in pending:
                if not fut.done():
                    fut.set_exception(refused)
            return
        if self._refusing:
            log.info("storing messages again")
            self._refusing = False
        if self._events is not None:
            self._events.succeeded(WRITER)
        for _, fut in pending:
            if not fut.done():
                fut.set_result(None)
