"""Twins over MQTT: a device's twin GET and reported-properties PATCH (answered on its response
topic) and the desired-property pushes to devices.

Desired pushes never wait in the thread that changed the twin (a REST request): with the
embedded broker they go straight to its in-process queue; otherwise they are queued for one
pusher thread, which publishes them in order, a batch at a time.
"""

from __future__ import annotations

import json
import logging
import queue
from collections.abc import Callable

from cloud_hub import events
from cloud_hub.errors import HubError, InvalidInput
from cloud_hub.twins import Twins
from edgefleet import protocol as p

log = logging.getLogger(__name__)

PUSH_BATCH_MAX = 500

Publish = Callable[[str, bytes], None]
PublishMany = Callable[[list[tuple[str, bytes]]], None]
PublishDirect = Callable[[list[tuple[str, bytes]]], bool]


class TwinRequests:
    """Answers a device's twin requests on ``.../twin/res/{status}/?$rid=...``."""

    def __init__(self, twins: Twins, publish: Publish) -> None:
        self._twins = twins
        self._publish = publish

    def get(self, topic: p.Topic) -> None:
        d, m, rid = topic.device_id, topic.module_id, topic.rid or ""
        try:
            twin = self._twins.get_device_side(d, m)
        except HubError as exc:
            self._publish(p.twin_response_topic(d, exc.status, rid, None, m), b"")
            return
        self._publish(p.twin_response_topic(d, 200, rid, None, m), json.dumps(twin).encode())

    def report(self, topic: p.Topic, payload: bytes) -> None:
        d, m, rid = topic.device_id, topic.module_id, topic.rid or ""
        try:
            patch = json.loads(payload or b"{}")
            if not isinstance(patch, dict):
                raise InvalidInput("reported patch must be a JSON object")
            version = self._twins.patch_reported(d, m, patch)
        except (HubError, ValueError) as exc:
            status = exc.status if isinstance(exc, HubError) else 400
            body = json.dumps({"message": str(exc)}).encode()
            self._publish(p.twin_response_topic(d, status, rid, None, m), body)
            return
        self._publish(p.twin_response_topic(d, 204, rid, version, m), b"")


class DesiredPushes:
    """Publishes every desired-properties change to its device or module, in order."""

    def __init__(self, publish_direct: PublishDirect, publish_many: PublishMany) -> None:
        self._direct = publish_direct
        self._publish_many = publish_many
        self._queue: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()

    def on_desired_changed(self, event: events.TwinDesiredChanged) -> None:
        """Event handler (request thread): queue the push; never blocks on the broker.

        Encoded here, so a caller changing its patch dict afterwards cannot change what is sent.
        """
        body = json.dumps({**event.patch, "$version": event.version}).encode()
        topic = p.twin_desired_topic(event.device_id, event.version, event.module_id)
        if self._direct([(topic, body)]):
            return  # the embedded broker's own queue keeps the order
        self._queue.put((topic, body))

    def close(self) -> None:
        """Let ``run`` send what is queued, then end."""
        self._queue.put(None)

    def run(self) -> None:
        """Send queued pushes in order, a batch at a time, until ``close``."""
        while True:
            batch = [self._queue.get()]
            while len(batch) < PUSH_BATCH_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            messages = [item for item in batch if item is not None]
            try:
                if messages:
                    self._publish_many(messages)
            except Exception:
                log.exception("pushing %d desired patches failed", len(messages))
            if len(messages) < len(batch):  # the stop sentinel
                return
