"""Direct methods for local modules: calls from the cloud (through the upstream client) and from
other modules of the device go to the module on its method topic; its response comes back on
``method_response`` and is matched by request id.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Mapping
from typing import Any

from edge_agent.edgehub.broker import LocalBroker
from edgefleet import module_topics as t
from edgefleet import protocol as p


def response_body(raw: bytes) -> Any:
    """A module's method response body: JSON when it parses, else the text."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


class MethodRelay:
    def __init__(
        self,
        device_id: str,
        broker: LocalBroker,
        send_local: Callable[[str, bytes], None],
        timeout_secs: float,
    ) -> None:
        self.device_id = device_id
        self._broker = broker
        self._send_local = send_local
        self._timeout = timeout_secs
        self._lock = threading.Lock()
        self._waiters: dict[str, tuple[threading.Event, list[tuple[int, bytes]]]] = {}

    def cloud_handler(self, module_id: str) -> Callable[[Any], Any]:
        """The upstream callback that runs a cloud-invoked method on the module."""

        def on_method(request: Any) -> Any:
            from edgefleet.sdk.device_client import MethodResponse

            status, body = self.call_module(module_id, request.name, request.payload)
            return MethodResponse.create_from_method_request(request, status, body)

        return on_method

    def resolve(self, rid: str | None, result: tuple[int, bytes]) -> None:
        """A module answered the request ``rid`` with ``(status, body)``."""
        with self._lock:
            waiter = self._waiters.get(rid or "")
        if waiter is not None:
            waiter[1].append(result)
            waiter[0].set()

    def call_module(
        self, module_id: str, method: str, payload: Any, timeout: float | None = None
    ) -> tuple[int, Any]:
        """Invoke a direct method on a local module and wait for its response."""
        if not self._broker.connected(module_id):
            return 404, {"message": f"module {module_id} is not connected"}
        rid = secrets.token_hex(8)
        event = threading.Event()
        box: list[tuple[int, bytes]] = []
        with self._lock:
            self._waiters[rid] = (event, box)
        try:
            topic = p.method_request_topic(self.device_id, method, rid, module_id)
            self._send_local(topic, json.dumps(payload).encode())
            if not event.wait(self._timeout if timeout is None else timeout):
                return 504, {"message": f"{module_id} did not answer {method!r} in time"}
        finally:
            with self._lock:
                self._waiters.pop(rid, None)
        status, raw = box[0]
        return int(status), response_body(raw)

    def invoke(self, module_id: str, local: t.LocalTopic, payload: bytes) -> None:
        """A module calls a direct method on another module of this device (pool thread)."""
        rid = local.rid or ""
        try:
            request: Mapping[str, Any] = json.loads(payload or b"{}")
        except ValueError:
            request = {}
        if local.target_device != self.device_id or not local.target_module:
            status, body = 501, {"message": "only modules of this device can be invoked locally"}
        else:
            status, body = self.call_module(local.target_module, local.name, request.get("payload"))
        topic = t.invoke_response_topic(self.device_id, module_id, status, rid)
        self._send_local(topic, json.dumps({"status": status, "payload": body}).encode())
