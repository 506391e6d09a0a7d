"""Device presence: online/offline from the retained presence messages devices publish (a
will message says offline when a connection dies), mirrored into the registry's
``connectionState`` and waited on by direct method calls."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from cloud_hub.registry import Registry
from edgefleet import protocol as p


class PresenceState(NamedTuple):
    online: bool
    since: float  # the message's timestamp, else the time it arrived (unix seconds)
    conn: str | None  # the connection that published it, when the device names one


def parse_presence_payload(payload: bytes) -> tuple[str, float | None, str | None]:
    """(state, timestamp, connection id) of a presence payload; ProtocolError when malformed."""
    state, ts = p.parse_presence(payload)
    conn: str | None = None
    try:
        body = json.loads(payload)
        if isinstance(body, dict) and isinstance(body.get("conn"), str):
            conn = body["conn"]
    except ValueError:
        pass
    return state, ts, conn


def is_stale(prev: PresenceState | None, online: bool, ts: float | None, conn: str | None) -> bool:
    """An offline from an older connection (a takeover's will) that arrives after a newer
    connection's online is not the device's state."""
    if prev is None or online or not prev.online or conn == prev.conn:
        return False
    return ts is not None and ts < prev.since


class Presence:
    """The online state of every device this process has heard from."""

    def __init__(self, registry: Registry, is_known: Callable[[str], bool]) -> None:
        self._registry = registry
        self._is_known = is_known
        self._changed = threading.Condition()
        self._states: dict[str, PresenceState] = {}

    def update(self, device_id: str, payload: bytes) -> None:
        """A presence message of ``device_id`` (control worker thread)."""
        try:
            state, ts, conn = parse_presence_payload(payload)
        except p.ProtocolError:
            return
        online = state == p.ONLINE
        with self._changed:
            if is_stale(self._states.get(device_id), online, ts, conn):
                return
            self._states[device_id] = PresenceState(online, ts or time.time(), conn)
            self._changed.notify_all()
        if self._is_known(device_id):
            self._registry.set_connection_state(device_id, online)

    def forget(self, device_id: str) -> None:
        """A deleted device's state goes with it (a new device may reuse the id)."""
        with self._changed:
            self._states.pop(device_id, None)

    def wait_online(self, device_id: str, timeout: float) -> bool:
        """True as soon as the device is online; False when it is not within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                state = self._states.get(device_id)
                if state and state.online:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
