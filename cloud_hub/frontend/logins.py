"""Which credential the front end uses at the broker for an IoT Hub-dialect identity."""

from __future__ import annotations

from typing import Any

from cloud_hub.broker.base import Broker
from edgefleet import iothub_dialect as iothub
from edgefleet import protocol as p


def broker_login(broker: Broker, registry: Any) -> Any:
    """The ``login`` of :class:`cloud_hub.frontend.server.FrontEnd` for this broker.

    Managed mosquitto has a front-end user per identity, confined by its ACL to the identity's
    subtree. An external broker knows only edgefleet's device users (``docs/messaging.md``): the
    connection logs in as the device with its primary key's password (a module as its device,
    with its own client id), and the broker's ``%u`` pattern confines it to the device's subtree.
    """
    own = getattr(broker, "frontend_login", None)
    if own is not None:
        return own

    def device_login(ident: iothub.IotHubIdentity) -> tuple[str, str, str] | None:
        found = registry.identity(ident.device_id)
        if found is None or not found.primary_key:
            return None
        password = p.mqtt_password(ident.device_id, found.primary_key)
        return ident.client_id, p.mqtt_username(ident.device_id), password

    return device_login
