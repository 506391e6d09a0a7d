"""Twin change notifications: the messages the edge hub routes from ``/twinChangeNotifications``.

When the hub accepts a module's reported-properties patch relayed by the edge hub, the edge hub
routes one notification. Its body has the shape of IoT Hub's twin change events, so
``twin_change_includes(properties.reported.x)`` and ``$body.properties.reported.x`` query it:

    {"version": 7, "properties": {"reported": {<the patch>, "$version": 7}}}

It is JSON (``contentType`` application/json, ``contentEncoding`` utf-8), carries the sender in
``connectionDeviceId``/``connectionModuleId`` and the system property ``messageSchema`` =
``twinChangeNotification`` for route conditions; the application properties
``iothub-message-schema`` and ``opType`` travel with it to module inputs and upstream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge_agent.edgehub.routes import TWIN_CHANGE_SOURCE, RouteMessage
from edgefleet import protocol as p

MESSAGE_SCHEMA = "twinChangeNotification"
SCHEMA_PROPERTY = "iothub-message-schema"
OP_TYPE = "updateTwin"


@dataclass(frozen=True)
class TwinChange:
    bag: dict[str, str]  # the property bag it is delivered with (system ``$.`` keys + custom)
    body: bytes
    route_message: RouteMessage


def reported_change(
    device_id: str, module_id: str, patch: dict[str, Any], version: int | None
) -> TwinChange:
    """The notification for an accepted reported patch (``version``: the new reported version)."""
    reported = dict(patch)
    doc: dict[str, Any] = {}
    if version:
        reported["$version"] = version
        doc["version"] = version
    doc["properties"] = {"reported": reported}
    body = json.dumps(doc, separators=(",", ":")).encode()
    message_id = p.new_message_id()
    custom = {SCHEMA_PROPERTY: MESSAGE_SCHEMA, "opType": OP_TYPE}
    bag = {
        p.SYS_MESSAGE_ID: message_id,
        p.SYS_CONTENT_TYPE: "application/json",
        p.SYS_CONTENT_ENCODING: "utf-8",
        p.SYS_CONNECTION_DEVICE_ID: device_id,
        p.SYS_CONNECTION_MODULE_ID: module_id,
        **custom,
    }
    system = {
        "messageId": message_id,
        "contentType": "application/json",
        "contentEncoding": "utf-8",
        "connectionDeviceId": device_id,
        "connectionModuleId": module_id,
        "messageSchema": MESSAGE_SCHEMA,
        "messageType": MESSAGE_SCHEMA,
    }
    return TwinChange(bag, body, RouteMessage(TWIN_CHANGE_SOURCE, body, custom, system))
