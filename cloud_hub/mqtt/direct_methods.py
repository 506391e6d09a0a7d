"""Direct methods: the hub publishes a request to a device or module and waits for the
response the device publishes with the same request id (IoT Hub's semantics for the timeouts)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloud_hub.errors import HubError, InvalidInput
from cloud_hub.registry import Registry
from edgefleet import protocol as p


class DeviceNotOnline(HubError):
    status = 404
    code = "DeviceNotOnline"


class GatewayTimeout(HubError):
    status = 504
    code = "GatewayTimeout"


@dataclass
class _MethodCall:
    done: threading.Event = field(default_factory=threading.Event)
    status: int = 0
    payload: Any = None


def _call_key(device_id: str, module_id: str | None, rid: str | None) -> str:
    return f"{device_id}|{module_id or ''}|{rid}"


class DirectMethods:
    """Calls in flight, keyed by device, module and request id."""

    def __init__(
        self,
        registry: Registry,
        wait_online: Callable[[str, float], bool],
        publish: Callable[[str, bytes], None],
        module_connected: Callable[[str, str], bool] | None = None,
    ) -> None:
        self._registry = registry
        self._wait_online = wait_online
        self._publish = publish
        self._module_connected = module_connected
        self._lock = threading.Lock()
        self._calls: dict[str, _MethodCall] = {}

    def invoke(
        self,
        device_id: str,
        module_id: str | None,
        method_name: str,
        payload: Any,
        response_timeout: float = 30.0,
        connect_timeout: float = 0.0,
    ) -> dict[str, Any]:
        """Call a direct method: wait up to ``connect_timeout`` for the device to be online (or
        the module to be connected by itself, where the broker tells; else DeviceNotOnline),
        then up to ``response_timeout`` for its answer (else GatewayTimeout)."""
        if module_id is None:
            self._registry.get_device(device_id)  # DeviceNotFound -> 404
        else:
            self._registry.get_module(device_id, module_id)
        try:
            p.validate_id(method_name, "method name")
        except p.ProtocolError as exc:
            raise InvalidInput(str(exc), path="methodName") from exc
        # A module connected on its own (IoT Hub's module client) is online without its device.
        module_online = (
            module_id is not None
            and self._module_connected is not None
            and self._module_connected(device_id, module_id)
        )
        if not module_online and not self._wait_online(device_id, max(0.0, connect_timeout)):
            raise DeviceNotOnline(f"device {device_id} is not online")
        rid = uuid.uuid4().hex
        key = _call_key(device_id, module_id, rid)
        call = _MethodCall()
        with self._lock:
            self._calls[key] = call
        try:
            self._publish(
                p.method_request_topic(device_id, method_name, rid, module_id),
                json.dumps(payload).encode(),
            )
            if not call.done.wait(max(0.1, response_timeout)):
                raise GatewayTimeout(
                    f"no response to {method_name!r} within {response_timeout:g} s"
                )
        finally:
            with self._lock:
                self._calls.pop(key, None)
        return {"status": call.status, "payload": call.payload}

    def on_response(self, topic: p.Topic, payload: bytes) -> None:
        """A device's method response (control worker thread); one nobody waits for is dropped."""
        with self._lock:
            call = self._calls.get(_call_key(topic.device_id, topic.module_id, topic.rid))
        if call is None:
            return
        try:
            call.payload = json.loads(payload) if payload else None
        except ValueError:
            call.payload = payload.decode(errors="replace")
        call.status = topic.status or 0
        call.done.set()
