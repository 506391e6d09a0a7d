"""Twin change notifications: a module's accepted reported patch is routed from
/twinChangeNotifications like any other message (module inputs with conditions, $upstream).

Reported patches need a hub that answers twin requests, so the edge hub's upstream is the real
cloud hub (its mosquitto broker, TLS).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge_agent.edgehub.hub import EdgeHub, EdgeHubConfig
from edgefleet.sdk.module_client import Message
from tests.support.edgehub import cloud_device, module
from tests.support.hub import RunningHub
from tests.support.mqtt import wait_until


@contextmanager
def edge_for(
    hub: RunningHub, device_id: str, tmp: Path, routes: dict[str, Any]
) -> Iterator[EdgeHub]:
    """An edge hub for a new device of ``hub``, with modules ``a`` and ``b``, online upstream."""
    upstream = cloud_device(hub, device_id).client(tmp / "outbox.db")
    edge = EdgeHub(EdgeHubConfig(device_id, tmp / "edgehub"), upstream)
    edge.apply_desired({"routes": routes})
    edge.start()
    try:
        upstream.connect(30)
        yield edge
    finally:
        edge.stop()
        upstream.shutdown()


def _reported_version(hub: RunningHub, device_id: str, module_id: str) -> int:
    with hub.client() as api:
        return int(api.get_twin(device_id, module_id)["properties"]["reported"]["$version"])


def test_reported_patch_reaches_a_module_input_only_through_matching_routes(
    hub: RunningHub, tmp_path: Path
) -> None:
    device_id = "twin-local"
    routes = {
        "state": "FROM /twinChangeNotifications"
        " WHERE twin_change_includes(properties.reported.state)"
        " AND $connectionModuleId = 'a' AND $messageSchema = 'twinChangeNotification'"
        " AND $body.properties.reported.state = 'running'"
        ' INTO BrokeredEndpoint("/modules/b/inputs/state")',
        "temp": "FROM /twinChangeNotifications"
        " WHERE twin_change_includes(properties.reported.temperature)"
        ' INTO BrokeredEndpoint("/modules/b/inputs/temp")',
        "marker": "FROM /messages/modules/a/outputs/marker"
        ' INTO BrokeredEndpoint("/modules/b/inputs/temp")',
    }
    with edge_for(hub, device_id, tmp_path, routes) as edge:
        a, b = module(edge, "a"), module(edge, "b")
        got: list[Message] = []
        lock = threading.Lock()

        def on_message(msg: Message) -> None:
            with lock:
                got.append(msg)

        b.on_message_received = on_message
        try:
            a.patch_twin_reported_properties({"state": "running"}, timeout=20)
            version = _reported_version(hub, device_id, "a")
            # the notification is routed before a's patch is answered, the marker after it; both
            # reach b over one session, in order: a copy from the temperature route would show
            a.send_message_to_output(Message.from_body({"marker": 1}), "marker")
            assert wait_until(lambda: any(m.input_name == "temp" for m in got), 20)
            with lock:
                inputs = [(m.input_name, m.json()) for m in got]
                note = got[0]
            body = {
                "version": version,
                "properties": {"reported": {"state": "running", "$version": version}},
            }
            assert inputs == [("state", body), ("temp", {"marker": 1})]
            assert note.content_type == "application/json"
            assert note.content_encoding == "utf-8"
            assert note.connection_device_id == device_id
            assert note.connection_module_id == "a"
            assert note.custom_properties["iothub-message-schema"] == "twinChangeNotification"
            assert edge.stats()["twinChangeNotifications"] == 1
        finally:
            a.shutdown()
            b.shutdown()


def test_twin_change_notification_reaches_the_hub_through_upstream(
    hub: RunningHub, tmp_path: Path
) -> None:
    device_id = "twin-up"
    routes = {"up": "FROM /twinChangeNotifications INTO $upstream"}
    with edge_for(hub, device_id, tmp_path, routes) as edge:
        a = module(edge, "a")
        try:
            a.patch_twin_reported_properties({"fw": {"version": "1.2"}}, timeout=20)
            version = _reported_version(hub, device_id, "a")

            def stored() -> list[dict[str, Any]]:
                with hub.client() as api:
                    page = api.request("GET", f"/devices/{device_id}/messages").json()
                return list(page["messages"])

            assert wait_until(lambda: bool(stored()), 30)
            [msg] = stored()
            assert msg["moduleId"] == "a"
            assert json.loads(msg["body"]) == {
                "version": version,
                "properties": {"reported": {"fw": {"version": "1.2"}, "$version": version}},
            }
            assert msg["properties"]["iothub-message-schema"] == "twinChangeNotification"
            assert msg["systemProperties"]["$.ct"] == "application/json"
            assert wait_until(lambda: edge.stats()["forwardedMessages"] == 1, 30)
            assert edge.stats()["queuedMessages"] == 0
        finally:
            a.shutdown()
