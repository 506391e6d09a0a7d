"""Module twins through the upstream client.

A module's twin read or reported patch (local topics) is answered on its twin response topic;
desired patches from the upstream twin go down to the module. An accepted reported patch also
routes a twin change notification (``twin_notify``) before the module gets its 204.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from edge_agent.edgehub import twin_notify
from edge_agent.edgehub.dispatch import Dispatcher
from edge_agent.edgehub.group_commit import Refused
from edgefleet import module_topics as t
from edgefleet import protocol as p

log = logging.getLogger("edgefleet.edgehub")


class TwinRelay:
    def __init__(
        self,
        device_id: str,
        upstream: Any,
        dispatcher: Dispatcher,
        loop: asyncio.AbstractEventLoop,
        send_local: Callable[[str, bytes], None],
        timeout_secs: float,
    ) -> None:
        self.device_id = device_id
        self._upstream = upstream
        self._dispatcher = dispatcher
        self._loop = loop
        self._send_local = send_local
        self._timeout = timeout_secs

    def desired_handler(self, module_id: str) -> Callable[[dict[str, Any]], None]:
        """The upstream callback that passes the module's desired patches down to it."""

        def on_desired(patch: dict[str, Any]) -> None:
            version = int(patch.get("$version", 0) or 0)
            self._send_local(
                p.twin_desired_topic(self.device_id, version, module_id), json.dumps(patch).encode()
            )

        return on_desired

    def request(self, module_id: str, local: t.LocalTopic, payload: bytes) -> None:
        """Answer a module's twin read or reported patch (runs in a pool thread)."""
        rid = local.rid or ""
        status, body, version = 200, b"", None
        up = self._upstream
        try:
            if up is None or not up.connected:
                status, body = 503, b'{"message": "upstream unreachable"}'
            elif local.kind == "twin_get":
                twin = up.module(module_id).get_twin(timeout=self._timeout)
                body = json.dumps(twin).encode()
            else:
                patch = json.loads(payload or b"{}")
                version = up.module(module_id).patch_twin_reported_properties(
                    patch, timeout=self._timeout
                )
                status = 204
                if isinstance(patch, dict):
                    self._notify_change(module_id, patch, version)
        except ValueError:
            status, body = 400, b'{"message": "reported patch is not JSON"}'
        except Exception as exc:  # noqa: BLE001 - ClientError/TimeoutError from upstream
            status = int(getattr(exc, "status", None) or 504)
            body = json.dumps({"message": str(exc)}).encode()
        topic = p.twin_response_topic(self.device_id, status, rid, version, module_id)
        self._send_local(topic, body)

    def _notify_change(self, module_id: str, patch: dict[str, Any], version: int) -> None:
        """Route the /twinChangeNotifications message of an accepted reported patch.

        Returns once the notification is delivered or, for $upstream, committed to the store, so
        the module's 204 follows a durable notification.
        """
        change = twin_notify.reported_change(self.device_id, module_id, patch, version)
        if len(change.body) > p.MAX_MESSAGE_BYTES:
            log.warning("dropped a %d-byte twin change notification", len(change.body))
            self._dispatcher.counters.oversized += 1
            return

        async def route() -> None:
            future = self._dispatcher.twin_change(module_id, change)
            if future is not None:
                await future

        try:
            asyncio.run_coroutine_threadsafe(route(), self._loop).result(self._timeout)
        except Refused as exc:  # a full disk: the twin is updated; the notification is lost
            log.warning("twin change notification of %s not stored: %s", module_id, exc.reason)
        except Exception:  # noqa: BLE001 - the twin is updated; only the notification is lost
            log.exception("routing the twin change notification of %s failed", module_id)
