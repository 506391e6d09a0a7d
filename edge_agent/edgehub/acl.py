"""Access decisions of the local broker: a module connects with its own key (as password, or as
the key of an IoT Hub SAS token on the TLS listener) and may only publish and subscribe below its
own topic subtree."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable

from edge_agent.edgehub.credentials import ModuleIdentity, key_bytes
from edgefleet import iothub_dialect as iothub
from edgefleet import module_topics as t
from edgefleet import protocol as p
from edgefleet import sas


def may_connect(expected: str | None, password: bytes | None) -> bool:
    """True when ``password`` is the module's (``expected`` is None for an unknown module)."""
    if expected is None or password is None:
        return False
    return hmac.compare_digest(expected.encode(), password)


def may_use_topic(device_id: str, module_id: str, topic: str) -> bool:
    """True when ``topic`` (or subscription filter) lies in the module's own subtree."""
    return topic.startswith(t.acl_prefix(device_id, module_id))


def admit_iothub(
    username: str | None,
    client_id: str,
    password: bytes | None,
    device_id: str,
    iothub_hostname: str,
    identity_of: Callable[[str], ModuleIdentity | None],
    now: float,
) -> tuple[str, iothub.IotHubIdentity, float] | None:
    """(module id, identity, token expiry) when an IoT Hub-dialect CONNECT names a module of this
    device under the IoT Hub host name the modules were given, and its password is a SAS token
    for that module, unexpired and signed with the module's key; else None."""
    try:
        connect = iothub.parse_connect(username or "", client_id)
    except p.ProtocolError:
        return None
    if password is None:
        return None
    token = password.decode(errors="replace")
    expiry = admit_module_token(token, connect, device_id, iothub_hostname, identity_of, now)
    if expiry is None or connect.identity.module_id is None:
        return None
    return connect.identity.module_id, connect.identity, expiry


def admit_module_token(
    token: str,
    connect: iothub.IotHubConnect,
    device_id: str,
    iothub_hostname: str,
    identity_of: Callable[[str], ModuleIdentity | None],
    now: float,
) -> float | None:
    """The expiry of ``token`` when it proves ``connect``'s identity, a module of this device
    under the IoT Hub host name the modules were given; else None."""
    ident = connect.identity
    if ident.device_id != device_id or ident.module_id is None:
        return None
    if connect.host != iothub_hostname.lower():
        return None
    module = identity_of(ident.module_id)
    if module is None:
        return None
    key = base64.b64encode(key_bytes(module.key)).decode()
    try:
        return float(iothub.verify_device_token(token, connect, (key,), now))
    except sas.SasRejected:
        return None
