"""Events of one hub process delivered to the others through PostgreSQL ``LISTEN/NOTIFY``.

Runs only when the hub is one of several processes (``--instance``) on PostgreSQL. Every local
event is sent as a NOTIFY on ``CHANNEL`` (by a sender thread, in batches, so the publishing
request never waits on it); a listener thread publishes the other processes' events on the local
bus marked ``remote`` (see ``cloud_hub/events.py``). A notification carries only the event's
identifying fields (ids, versions, flags): PostgreSQL caps a payload at 8,000 bytes, and those
who listen (the dashboard's live views) re-read what changed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import uuid
from typing import Any

from cloud_hub import events
from cloud_hub.db import dbapi_url
from cloud_hub.hub import BackgroundService, Hub

log = logging.getLogger(__name__)

CHANNEL = "edgefleet_events"
BRIDGED: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        events.DeviceCreated,
        events.DeviceUpdated,
        events.DeviceDeleted,
        events.ModuleCreated,
        events.ModuleUpdated,
        events.ModuleDeleted,
        events.TwinDesiredChanged,
        events.TwinReportedChanged,
        events.TwinTagsChanged,
        events.ConnectionStateChanged,
    )
}
_SCALARS = (str, int, float, bool, type(None))


def encode(event: object, origin: str) -> str | None:
    """The NOTIFY payload of ``event`` (its scalar fields), or None when it is not bridged."""
    name = type(event).__name__
    if name not in BRIDGED or not dataclasses.is_dataclass(event):
        return None
    fields = {
        f.name: getattr(event, f.name)
        for f in dataclasses.fields(event)
        if isinstance(getattr(event, f.name), _SCALARS)
    }
    return json.dumps({"o": origin, "t": name, "f": fields}, separators=(",", ":"))


def decode(payload: str, origin: str) -> object | None:
    """The event of another process's payload; None for our own, unknown or malformed ones.
    Fields left out of the payload (documents, patches) come back empty."""
    try:
        data = json.loads(payload)
        if data["o"] == origin:
            return None
        cls = BRIDGED[data["t"]]
        given: dict[str, Any] = data["f"]
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in given:
                values[f.name] = given[f.name]
            elif f.default is dataclasses.MISSING:
                if not str(f.type).startswith("dict"):
                    return None  # an id or version missing: not one of ours
                values[f.name] = {}
        return cls(**values)
    except (ValueError, KeyError, TypeError):
        return None


class EventBridge:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.origin = uuid.uuid4().hex
        self._url = dbapi_url(hub.settings.resolved_database_url())
        self._outgoing: queue.Queue[str] = queue.Queue(maxsize=100_000)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unsubscribe = lambda: None
        self.listening = threading.Event()

    async def start(self) -> None:
        self._unsubscribe = self.hub.events.subscribe(tuple(BRIDGED.values()), self._on_local)
        for target, name in (
            (self._send_loop, "event-notify"),
            (self._listen_loop, "event-listen"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    async def stop(self) -> None:
        self._unsubscribe()
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def _on_local(self, event: object) -> None:
        payload = encode(event, self.origin)
        if payload is not None:
            try:
                self._outgoing.put_nowait(payload)
            except queue.Full:  # the database is gone for long: live views catch up on reload
                pass

    def _send_loop(self) -> None:
        import psycopg

        conn: Any = None
        while not self._stop.is_set():
            try:
                first = self._outgoing.get(timeout=0.5)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < 500:
                try:
                    batch.append(self._outgoing.get_nowait())
                except queue.Empty:
                    break
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._url, autocommit=True)
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany("SELECT pg_notify(%s, %s)", [(CHANNEL, p) for p in batch])
            except psycopg.Error as exc:
                log.warning(
                    "cannot notify other hub processes (%s); %d events not sent", exc, len(batch)
                )
                conn = None
                self._stop.wait(1.0)
        if conn is not None:
            conn.close()

    def _listen_loop(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            event = decode(note.payload, self.origin)
                            if event is not None:
                                self.hub.events.publish(event, remote=True)
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("listening for other hub processes' events failed: %s", exc)
                self._stop.wait(1.0)


def install(app: Any, hub: Hub) -> None:
    """Bridge events when this hub is one of several processes on PostgreSQL."""
    instance = (hub.settings.model_extra or {}).get("instance")
    if not instance or hub.db.dialect != "postgresql":
        return
    bridge = EventBridge(hub)
    hub.extensions["event-bridge"] = bridge
    hub.add_background(BackgroundService("event-bridge", bridge.start, bridge.stop))
