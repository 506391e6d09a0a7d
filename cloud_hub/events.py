"""In-process event bus: the registry and twin services publish here after each commit.

Handlers run synchronously in the publishing thread (often a worker thread of the REST API), so they
must be quick and thread-safe; a handler that lives on an asyncio loop should use ``async_queue``.
A failing handler is logged and never fails the request that published the event.

With several hub processes (docs/scale-out.md) ``cloud_hub/event_bridge.py`` also publishes here
the events of the other processes, marked ``remote``: only subscribers that ask for them get
them (the dashboard's live views), so a side effect (a desired push, an assignment) still runs
once, in the process where the change happened.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceCreated:
    device_id: str
    device: dict[str, Any]


@dataclass(frozen=True)
class DeviceUpdated:
    """Identity changed: status, keys, thumbprints or capabilities (``device`` is the new JSON)."""

    device_id: str
    device: dict[str, Any]
    status_changed: bool = False
    credentials_changed: bool = False


@dataclass(frozen=True)
class DeviceDeleted:
    device_id: str


@dataclass(frozen=True)
class ModuleCreated:
    device_id: str
    module_id: str
    module: dict[str, Any]


@dataclass(frozen=True)
class ModuleUpdated:
    device_id: str
    module_id: str
    module: dict[str, Any]
    credentials_changed: bool = False


@dataclass(frozen=True)
class ModuleDeleted:
    device_id: str
    module_id: str


@dataclass(frozen=True)
class TwinDesiredChanged:
    """Desired properties changed: ``patch`` is a JSON merge patch (null deletes) to push."""

    device_id: str
    module_id: str | None
    patch: dict[str, Any]
    version: int
    #: the writer already created the module identities this change names (fleet assignment)
    identities_ensured: bool = False


@dataclass(frozen=True)
class TwinReportedChanged:
    device_id: str
    module_id: str | None
    patch: dict[str, Any]
    version: int


@dataclass(frozen=True)
class TwinTagsChanged:
    device_id: str
    module_id: str | None
    tags: dict[str, Any]


@dataclass(frozen=True)
class ConnectionStateChanged:
    device_id: str
    module_id: str | None
    connected: bool


Event = (
    DeviceCreated
    | DeviceUpdated
    | DeviceDeleted
    | ModuleCreated
    | ModuleUpdated
    | ModuleDeleted
    | TwinDesiredChanged
    | TwinReportedChanged
    | TwinTagsChanged
    | ConnectionStateChanged
)

E = TypeVar("E")


@dataclass
class _Subscription:
    types: tuple[type, ...]
    handler: Callable[[Any], None]
    remote: bool = False
    active: bool = field(default=True)


class EventBus:
    """Publish/subscribe by event class."""

    def __init__(self) -> None:
        self._subs: list[_Subscription] = []
        self._lock = threading.Lock()

    def subscribe(
        self,
        types: type[E] | tuple[type, ...],
        handler: Callable[[E], None],
        remote: bool = False,
    ) -> Callable[[], None]:
        """Call ``handler(event)`` for every published event of ``types`` (with ``remote``,
        other hub processes' events too); returns unsubscribe."""
        sub = _Subscription(types if isinstance(types, tuple) else (types,), handler, remote)
        with self._lock:
            self._subs = [*self._subs, sub]

        def unsubscribe() -> None:
            sub.active = False
            with self._lock:
                self._subs = [s for s in self._subs if s is not sub]

        return unsubscribe

    def async_queue(
        self, loop: asyncio.AbstractEventLoop, *types: type, remote: bool = False
    ) -> tuple[asyncio.Queue[Any], Callable[[], None]]:
        """An asyncio queue on ``loop`` that receives the events of ``types`` (thread-safe)."""
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def forward(event: Any) -> None:
            if loop.is_closed():
                return
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # loop closed between the check and the call
                pass

        return queue, self.subscribe(tuple(types), forward, remote)

    def publish(self, event: object, remote: bool = False) -> None:
        """Deliver ``event``; ``remote``: it happened in another hub process."""
        for sub in self._subs:
            if sub.active and isinstance(event, sub.types) and (sub.remote or not remote):
                try:
                    sub.handler(event)
                except Exception:
                    log.exception("event handler %r failed on %r", sub.handler, event)
