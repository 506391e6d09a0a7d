"""IoT Hub's device MQTT dialect mapped onto the edgefleet contract, per connection (pure).

IoT Hub's SDKs (azure-iot-device) connect with client id ``{device}`` or ``{device}/{module}`` and
user name ``{HostName}/{clientId}/?api-version=...``, and use ``$iothub/twin/...`` and
``$iothub/methods/...`` topics that carry no device id. A connection in this dialect is bound to
the identity it authenticated as: every topic it publishes or subscribes to is rewritten into that
identity's own ``devices/{d}[/modules/{m}]/...`` subtree, and every message delivered to it is
rewritten back. Topics with no such rewrite (another device's, wildcards over ``$iothub`` or
``devices``) are refused (``None``), so isolation does not depend on a shared namespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from edgefleet import protocol as p
from edgefleet import sas
from edgefleet.digits import ascii_uint

_TWIN_GET = "$iothub/twin/GET/"
_TWIN_REPORTED = "$iothub/twin/PATCH/properties/reported/"
_METHOD_RES = "$iothub/methods/res/"

_TWIN_RES = "$iothub/twin/res/"
_TWIN_DESIRED = "$iothub/twin/PATCH/properties/desired/"
_METHOD_POST = "$iothub/methods/POST/"


@dataclass(frozen=True)
class IotHubIdentity:
    """Who an IoT Hub-dialect connection is: a device, or a module of a device."""

    device_id: str
    module_id: str | None = None

    @property
    def prefix(self) -> str:
        """The connection's own subtree in the edgefleet contract (with a trailing ``/``)."""
        base = f"{p.ROOT}/{self.device_id}/"
        return base if self.module_id is None else f"{base}modules/{self.module_id}/"

    @property
    def client_id(self) -> str:
        return self.device_id if self.module_id is None else f"{self.device_id}/{self.module_id}"

    @property
    def resource(self) -> str:
        """The path a SAS token of this identity names after the host (``sr``)."""
        base = f"devices/{self.device_id}"
        return base if self.module_id is None else f"{base}/modules/{self.module_id}"


@dataclass(frozen=True)
class IotHubConnect:
    """The parts of an IoT Hub-dialect user name."""

    host: str
    identity: IotHubIdentity
    query: str


def is_iothub_username(username: str | None) -> bool:
    """Whether a CONNECT's user name has IoT Hub's form ``{host}/{clientId}/?api-version=...``
    (edgefleet's own user names are device ids, which cannot contain ``/``)."""
    if not username:
        return False
    head, sep, query = username.partition("/?")
    return bool(sep) and "/" in head and "api-version=" in query


def parse_connect(username: str, client_id: str) -> IotHubConnect:
    """The identity of an IoT Hub-dialect CONNECT; ProtocolError when the user name is not of
    that form, names another client id than the CONNECT's, or the ids are invalid."""
    if not is_iothub_username(username):
        raise p.ProtocolError("not an IoT Hub user name")
    head, _, query = username.partition("/?")
    host, _, named = head.partition("/")
    if not host or named != client_id:
        raise p.ProtocolError("the user name names another client id")
    device_id, slash, module_id = client_id.partition("/")
    p.validate_id(device_id, "device id")
    if slash:
        p.validate_id(module_id, "module id")
    return IotHubConnect(host.lower(), IotHubIdentity(device_id, module_id or None), query)


def _rid_tail(rest: str) -> str | None:
    """``?$rid=R[...]`` of a request topic's last level, or None when it is not one level."""
    if "/" in rest or not rest.startswith("?"):
        return None
    return rest


def inbound_publish(ident: IotHubIdentity, topic: str) -> str | None:
    """The edgefleet topic for a PUBLISH of this connection, or None (refused)."""
    prefix = ident.prefix
    if topic.startswith(prefix + "messages/events/") or topic == prefix + "messages/events":
        return topic if "+" not in topic and "#" not in topic else None
    if topic.startswith(_TWIN_GET):
        tail = _rid_tail(topic[len(_TWIN_GET) :])
        return None if tail is None else f"{prefix}twin/get/{tail}"
    if topic.startswith(_TWIN_REPORTED):
        tail = _rid_tail(topic[len(_TWIN_REPORTED) :])
        return None if tail is None else f"{prefix}twin/reported/{tail}"
    if topic.startswith(_METHOD_RES):
        status, sep, rest = topic[len(_METHOD_RES) :].partition("/")
        tail = _rid_tail(rest)
        if not sep or ascii_uint(status) is None or tail is None:
            return None
        return f"{prefix}methods/res/{status}/{tail}"
    return None


def inbound_filter(ident: IotHubIdentity, topic_filter: str) -> str | None:
    """The edgefleet filter for a SUBSCRIBE of this connection, or None (refused)."""
    prefix = ident.prefix
    if topic_filter == _TWIN_RES + "#":
        return prefix + "twin/res/#"
    if topic_filter == _TWIN_DESIRED + "#":
        return prefix + "twin/desired/#"
    if topic_filter == _METHOD_POST + "#":
        return prefix + "methods/POST/#"
    if ident.module_id is None and topic_filter == prefix + "messages/devicebound/#":
        return topic_filter
    if ident.module_id is not None and topic_filter == prefix + "inputs/#":
        return topic_filter
    return None


def outbound_topic(ident: IotHubIdentity, topic: str) -> str | None:
    """The IoT Hub topic under which a message of this connection's subtree is delivered to it,
    or None when it is not for this identity (never delivered)."""
    prefix = ident.prefix
    if not topic.startswith(prefix):
        return None
    rest = topic[len(prefix) :]
    if rest.startswith("messages/devicebound/") and ident.module_id is None:
        return topic
    if rest.startswith("inputs/") and ident.module_id is not None:
        return topic
    if rest.startswith("twin/res/"):
        return _TWIN_RES + rest[len("twin/res/") :]
    if rest.startswith("twin/desired/"):
        return _TWIN_DESIRED + rest[len("twin/desired/") :]
    if rest.startswith("methods/POST/"):
        return _METHOD_POST + rest[len("methods/POST/") :]
    return None


def verify_device_token(
    password: str, connect: IotHubConnect, keys: tuple[str | None, ...], now: float
) -> int:
    """The expiry (unix seconds) of a device or module SAS token that admits ``connect``: it names
    the host the client connected to and the identity's own resource, has not expired and is
    signed with one of the identity's ``keys``; else sas.SasRejected."""
    token = sas.parse_device_token(password)
    host, path = sas_resource(token.resource)
    if host != connect.host or path.lower() != connect.identity.resource.lower():
        raise sas.SasRejected("the shared access signature is for another resource")
    expiry = int(token.expiry)
    if expiry <= now:
        raise sas.SasRejected("the shared access signature has expired")
    if not sas.signed_with(token, keys):
        raise sas.SasRejected("the shared access signature does not match the identity's keys")
    return expiry


def sas_resource(resource: str) -> tuple[str, str]:
    """(host, path) of a device token's ``sr`` (URL-encoded ``host/devices/{d}[/modules/{m}]``)."""
    decoded = unquote(resource).strip("/")
    for scheme in ("https://", "http://"):
        decoded = decoded.removeprefix(scheme)
    host, _, path = decoded.partition("/")
    return host.lower(), path.strip("/")
