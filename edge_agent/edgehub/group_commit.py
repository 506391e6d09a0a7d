"""Group commit into the store-and-forward queue.

A message bound upstream counts as delivered once it is committed to the store: the module's
PUBACK waits for the future ``add`` returns. Every such message that arrives in one turn of the
event loop goes into the store in one transaction.
"""

from __future__ import annotations

import asyncio

from edge_agent.edgehub.store_and_forward import Item, MessageStore


class GroupCommit:
    """Collects items in the loop thread; commits them at the end of the loop turn."""

    def __init__(self, store: MessageStore, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        self._pending: list[tuple[Item, asyncio.Future[None]]] = []

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
        except Exception as exc:  # noqa: BLE001 - no PUBACK; the module resends
            for _, fut in pending:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for _, fut in pending:
            if not fut.done():
                fut.set_result(None)
