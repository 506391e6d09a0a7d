"""Twin traffic of the device client: requests answered on the twin response topic, desired
pushes, and the full-twin resync after every (re)connect.

Requests (twin get, reported patch) are not replayed after a connection loss: the caller gets a
``ClientError`` at once. Desired pushes and resyncs run on one ordered thread; a version not newer
than the last one a channel has seen is dropped, so a stale push never undoes a resync.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgefleet import protocol as p
from edgefleet.sdk.device_connection import DeviceConnection
from edgefleet.sdk.errors import ClientError
from edgefleet.sdk.methods import MethodHandler

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]
DesiredHandler = Callable[[JsonDict], None]
TwinGetter = Callable[[float], JsonDict]


@dataclass
class ChannelHandlers:
    """The user's handlers of the device or of one module channel."""

    desired: DesiredHandler | None = None
    method: MethodHandler | None = None
    message: Callable[[p.Message], None] | None = None
    twin_resync: Callable[[JsonDict], None] | None = None
    last_desired_version: int = 0

    @property
    def wants_twin(self) -> bool:
        return self.desired is not None or self.twin_resync is not None


@dataclass
class Pending:
    done: threading.Event = field(default_factory=threading.Event)
    status: int = 0
    version: int | None = None
    body: bytes = b""


class TwinRequests:
    """Requests in flight, matched to their answers by request id."""

    def __init__(self, device_id: str, link: DeviceConnection) -> None:
        self._device_id = device_id
        self._link = link
        self._lock = threading.Lock()
        self._pending: dict[str, Pending] = {}
        self._rid = 0

    def new_rid(self) -> str:
        with self._lock:
            self._rid += 1
            return f"{self._rid}.{uuid.uuid4().hex[:8]}"

    def request(self, topic: str, payload: bytes, rid: str, timeout: float) -> Pending:
        deadline = time.monotonic() + timeout
        if not self._link.connected.wait(timeout):
            raise ClientError(f"{self._device_id}: not connected")
        pending = Pending()
        with self._lock:
            self._pending[rid] = pending
        try:
            self._link.publish(topic, payload)
            if not pending.done.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"no answer from the hub to {topic}")
        finally:
            with self._lock:
                self._pending.pop(rid, None)
        if pending.status == -1:
            raise ClientError("connection lost before the hub answered", None)
        if pending.status >= 300:
            detail = pending.body.decode(errors="replace")[:200]
            raise ClientError(f"hub answered {pending.status}: {detail}", pending.status)
        return pending

    def answer(self, rid: str, status: int, version: int | None, body: bytes) -> None:
        """An answer arrived (one for no request in flight is dropped)."""
        with self._lock:
            pending = self._pending.get(rid)
        if pending is not None:
            pending.status = status
            pending.version = version
            pending.body = body
            pending.done.set()

    def fail_all(self) -> None:
        """The connection is gone: every waiting caller sees a clear failure."""
        with self._lock:
            pending = list(self._pending.values())
        for req in pending:
            req.status = -1
            req.done.set()


def deliver_desired(handlers: ChannelHandlers, version: int, payload: bytes) -> None:
    """A pushed desired patch: to the handler unless stale or a duplicate."""
    if version <= handlers.last_desired_version:
        return  # stale or duplicate push
    handlers.last_desired_version = version
    if handlers.desired is None:
        return
    try:
        patch = json.loads(payload or b"{}")
        handlers.desired(patch)
    except Exception:
        log.exception("desired-properties handler failed")


def apply_resync(handlers: ChannelHandlers, twin: JsonDict) -> None:
    """A full twin fetched after a (re)connect: to the resync handler (else the desired handler
    gets the full desired section) when newer than the last version seen."""
    desired = twin.get("desired", {})
    version = int(desired.get("$version", 0))
    if version <= handlers.last_desired_version:
        return
    handlers.last_desired_version = version
    try:
        if handlers.twin_resync is not None:
            handlers.twin_resync(twin)
        elif handlers.desired is not None:
            handlers.desired(desired)
    except Exception:
        log.exception("twin resync handler failed")


TWIN_FETCH_PATIENCE_SECS = 120.0
"""How long a connection whose publishes the broker acknowledges waits for a twin answer (a hub
busy with a backlog after an outage answers late) before it is dropped."""


def fetch_twin_while_connected(
    link: DeviceConnection, get_twin: TwinGetter, module_id: str | None
) -> JsonDict | None:
    """Get a twin, retrying with backoff while this connection lasts.

    A request sent right after CONNACK can be lost while the broker is still setting up the
    session's subscriptions; giving up would leave the device on a stale desired state until
    the next desired change, so the fetch is retried instead. A connection on which the broker
    acknowledges nothing during three tries (a broker that took the session over badly), or
    the hub answers nothing for ``TWIN_FETCH_PATIENCE_SECS``, is dropped: the reconnect resyncs
    again. Dropping sooner would make every device reconnect while the hub works off a backlog.
    """
    device_id = link.settings.device_id
    delay = 0.5
    conn = link.conn
    started = window = time.monotonic()
    tries = 0
    while True:
        if link.stop.is_set() or not link.connected.is_set() or link.conn != conn:
            return None
        try:
            return get_twin(5)
        except (ClientError, TimeoutError) as exc:
            log.info("twin resync of %s/%s failed, retrying: %s", device_id, module_id, exc)
        tries += 1
        if tries >= 3:
            acknowledged = link.last_ack > window
            if not acknowledged or time.monotonic() - started > TWIN_FETCH_PATIENCE_SECS:
                break
            tries, window = 0, time.monotonic()
        link.stop.wait(delay)
        delay = min(delay * 2, 10.0)
    if not link.stop.is_set() and link.conn == conn:
        log.warning("no twin answer on this connection of %s: reconnecting", device_id)
        link.mqtt.disconnect()
    return None
