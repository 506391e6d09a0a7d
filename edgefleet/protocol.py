"""The device <-> hub MQTT contract: every topic, the property bag and the message envelope.

This is the one place where topics are spelled; the hub's service worker, the device SDK, the edge
hub and the tests all build and parse topics through these functions. ``docs/protocol.md`` explains
the contract in prose.

Every topic starts with ``devices/{deviceId}/`` (module traffic with
``devices/{deviceId}/modules/{moduleId}/``), so a broker ACL bound to the authenticated user name
(``pattern readwrite devices/%u/#``) isolates devices on any MQTT 3.1.1/5 broker.
Message properties travel in a URL-encoded property bag as the last topic level.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote, unquote

from edgefleet.digits import ascii_int

ROOT = "devices"
MAX_MESSAGE_BYTES = 256 * 1024
"""Largest telemetry payload the hub accepts; larger messages are rejected and counted."""

HUB_USERNAME = "$edgefleet-hub"
"""MQTT user name of the hub's own (privileged) service client."""

_FORBIDDEN_ID_CHARS = frozenset("/+#\x00")

# System property keys in the property bag (the value of a key starting with "$." is a system
# property; all other keys are application properties).
SYS_MESSAGE_ID = "$.mid"
SYS_CORRELATION_ID = "$.cid"
SYS_CONTENT_TYPE = "$.ct"
SYS_CONTENT_ENCODING = "$.ce"
SYS_CREATION_TIME = "$.ctime"
SYS_USER_ID = "$.uid"
SYS_TO = "$.to"
SYS_EXPIRY = "$.exp"
SYS_OUTPUT_NAME = "$.on"
SYS_INPUT_NAME = "$.in"
SYS_CONNECTION_DEVICE_ID = "$.cdid"
SYS_CONNECTION_MODULE_ID = "$.cmid"

_SYSTEM_KEYS = {
    SYS_MESSAGE_ID: "message_id",
    SYS_CORRELATION_ID: "correlation_id",
    SYS_CONTENT_TYPE: "content_type",
    SYS_CONTENT_ENCODING: "content_encoding",
    SYS_CREATION_TIME: "creation_time",
    SYS_USER_ID: "user_id",
    SYS_TO: "to",
    SYS_EXPIRY: "expiry_time",
    SYS_OUTPUT_NAME: "output_name",
    SYS_INPUT_NAME: "input_name",
    SYS_CONNECTION_DEVICE_ID: "connection_device_id",
    SYS_CONNECTION_MODULE_ID: "connection_module_id",
}


class ProtocolError(ValueError):
    """A topic or payload that does not follow the contract."""


class Kind(StrEnum):
    """What a topic carries."""

    TELEMETRY = "telemetry"
    C2D = "c2d"
    TWIN_GET = "twin_get"
    TWIN_REPORTED = "twin_reported"
    TWIN_RESPONSE = "twin_response"
    TWIN_DESIRED = "twin_desired"
    METHOD_REQUEST = "method_request"
    METHOD_RESPONSE = "method_response"
    PRESENCE = "presence"


@dataclass(frozen=True)
class Topic:
    """A parsed topic. ``status``/``rid``/``version``/``method`` are set where the kind has them."""

    kind: Kind
    device_id: str
    module_id: str | None = None
    properties: dict[str, str] = field(default_factory=dict)
    rid: str | None = None
    version: int | None = None
    status: int | None = None
    method: str | None = None


def validate_id(value: str, what: str = "id") -> str:
    """Device and module ids must be non-empty and must not contain ``/``, ``+``, ``#`` or NUL."""
    if not value or any(ch in _FORBIDDEN_ID_CHARS for ch in value) or len(value) > 128:
        raise ProtocolError(f"invalid {what} {value!r} for MQTT topics")
    return value


def _prefix(device_id: str, module_id: str | None) -> str:
    validate_id(device_id, "device id")
    if module_id is None:
        return f"{ROOT}/{device_id}"
    validate_id(module_id, "module id")
    return f"{ROOT}/{device_id}/modules/{module_id}"


# ---------------------------------------------------------------------------------------------
# Property bag


# what ``quote(s, safe="$.")`` leaves as it is: such text needs no quoting (the common case)
_PLAIN = re.compile(r"[A-Za-z0-9_.~$-]*")


def _bag_part(text: str) -> str:
    return text if _PLAIN.fullmatch(text) else quote(text, safe="$.")


def encode_property_bag(properties: dict[str, str]) -> str:
    """``k1=v1&k2=v2`` with keys and values percent-encoded (``$`` and ``.`` kept readable)."""
    return "&".join(f"{_bag_part(str(k))}={_bag_part(str(v))}" for k, v in properties.items())


def extend_property_bag(encoded: str, properties: dict[str, str], key: str, value: str) -> str:
    """``encode_property_bag(properties | {key: value})`` from ``encoded``, the encoding of
    ``properties``, without encoding them again."""
    if key in properties:  # the key keeps its place: encode it all
        return encode_property_bag({**properties, key: value})
    part = f"{_bag_part(key)}={_bag_part(value)}"
    return f"{encoded}&{part}" if encoded else part


def decode_property_bag(bag: str) -> dict[str, str]:
    """Inverse of :func:`encode_property_bag`; a leading ``?`` is tolerated."""
    if bag.startswith("?"):
        bag = bag[1:]
    out: dict[str, str] = {}
    if not bag:
        return out
    for part in bag.split("&"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        out[unquote(key)] = unquote(value) if sep else ""
    return out


# ---------------------------------------------------------------------------------------------
# Topic builders


def telemetry_topic(
    device_id: str, properties: dict[str, str] | None = None, module_id: str | None = None
) -> str:
    return (
        f"{_prefix(device_id, module_id)}/messages/events/{encode_property_bag(properties or {})}"
    )


def c2d_topic(
    device_id: str, properties: dict[str, str] | None = None, module_id: str | None = None
) -> str:
    bag = encode_property_bag(properties or {})
    return f"{_prefix(device_id, module_id)}/messages/devicebound/{bag}"


def twin_get_topic(device_id: str, rid: str, module_id: str | None = None) -> str:
    return f"{_prefix(device_id, module_id)}/twin/get/?$rid={quote(rid, safe='')}"


def twin_reported_topic(device_id: str, rid: str, module_id: str | None = None) -> str:
    return f"{_prefix(device_id, module_id)}/twin/reported/?$rid={quote(rid, safe='')}"


def twin_response_topic(
    device_id: str, status: int, rid: str, version: int | None = None, module_id: str | None = None
) -> str:
    bag = f"?$rid={quote(rid, safe='')}"
    if version is not None:
        bag += f"&$version={version}"
    return f"{_prefix(device_id, module_id)}/twin/res/{status}/{bag}"


def twin_desired_topic(device_id: str, version: int, module_id: str | None = None) -> str:
    return f"{_prefix(device_id, module_id)}/twin/desired/?$version={version}"


def method_request_topic(
    device_id: str, method: str, rid: str, module_id: str | None = None
) -> str:
    validate_id(method, "method name")
    return f"{_prefix(device_id, module_id)}/methods/POST/{method}/?$rid={quote(rid, safe='')}"


def method_response_topic(
    device_id: str, status: int, rid: str, module_id: str | None = None
) -> str:
    return f"{_prefix(device_id, module_id)}/methods/res/{status}/?$rid={quote(rid, safe='')}"


def presence_topic(device_id: str) -> str:
    return f"{_prefix(device_id, None)}/presence"


# ---------------------------------------------------------------------------------------------
# Subscriptions


def device_subscriptions(device_id: str) -> list[str]:
    """Topic filters a device client subscribes to (its own and its modules' inbound traffic)."""
    p = _prefix(device_id, None)
    return [
        f"{p}/messages/devicebound/#",
        f"{p}/twin/res/#",
        f"{p}/twin/desired/#",
        f"{p}/methods/POST/#",
        f"{p}/modules/+/messages/devicebound/#",
        f"{p}/modules/+/twin/res/#",
        f"{p}/modules/+/twin/desired/#",
        f"{p}/modules/+/methods/POST/#",
    ]


HUB_SUBSCRIPTIONS: list[str] = [
    f"{ROOT}/+/messages/events/#",
    f"{ROOT}/+/modules/+/messages/events/#",
    f"{ROOT}/+/twin/get/#",
    f"{ROOT}/+/twin/reported/#",
    f"{ROOT}/+/modules/+/twin/get/#",
    f"{ROOT}/+/modules/+/twin/reported/#",
    f"{ROOT}/+/methods/res/#",
    f"{ROOT}/+/modules/+/methods/res/#",
    f"{ROOT}/+/presence",
]
"""Topic filters the hub's service client subscribes to."""

ACL_PATTERN = f"{ROOT}/%u/#"
"""The mosquitto ``acl_file`` pattern that confines each device to its own topics."""


# ---------------------------------------------------------------------------------------------
# Topic parser


def _int(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    number = ascii_int(value)
    if number is None:
        raise ProtocolError(f"{what} is not an integer: {value!r}")
    return number


def parse_topic(topic: str) -> Topic:
    """Parse any topic of the contract; raise :class:`ProtocolError` for anything else."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != ROOT or not parts[1]:
        raise ProtocolError(f"not an edgefleet topic: {topic!r}")
    device_id = parts[1]
    rest = parts[2:]
    module_id: str | None = None
    if rest[0] == "modules":
        if len(rest) < 3 or not rest[1]:
            raise ProtocolError(f"bad module topic: {topic!r}")
        module_id = rest[1]
        rest = rest[2:]
    head = rest[0]
    if head == "presence" and len(rest) == 1 and module_id is None:
        return Topic(Kind.PRESENCE, device_id)
    if head == "messages" and len(rest) >= 2:
        bag = decode_property_bag("/".join(rest[2:]))
        if rest[1] == "events":
            return Topic(Kind.TELEMETRY, device_id, module_id, bag)
        if rest[1] == "devicebound":
            return Topic(Kind.C2D, device_id, module_id, bag)
    if head == "twin" and len(rest) >= 2:
        action = rest[1]
        if action in ("get", "reported", "desired") and len(rest) == 3:
            bag = decode_property_bag(rest[2])
            if action == "desired":
                version = _int(bag.get("$version"), "$version")
                if version is None:
                    raise ProtocolError(f"desired topic without $version: {topic!r}")
                return Topic(Kind.TWIN_DESIRED, device_id, module_id, bag, version=version)
            rid = bag.get("$rid")
            if rid is None:
                raise ProtocolError(f"twin request without $rid: {topic!r}")
            kind = Kind.TWIN_GET if action == "get" else Kind.TWIN_REPORTED
            return Topic(kind, device_id, module_id, bag, rid=rid)
        if action == "res" and len(rest) == 4:
            bag = decode_property_bag(rest[3])
            return Topic(
                Kind.TWIN_RESPONSE,
                device_id,
                module_id,
                bag,
                rid=bag.get("$rid"),
                version=_int(bag.get("$version"), "$version"),
                status=_int(rest[2], "status"),
            )
    if head == "methods" and len(rest) == 4:
        bag = decode_property_bag(rest[3])
        if rest[1] == "POST":
            return Topic(
                Kind.METHOD_REQUEST, device_id, module_id, bag, rid=bag.get("$rid"), method=rest[2]
            )
        if rest[1] == "res":
            return Topic(
                Kind.METHOD_RESPONSE,
                device_id,
                module_id,
                bag,
                rid=bag.get("$rid"),
                status=_int(rest[2], "status"),
            )
    raise ProtocolError(f"unknown edgefleet topic: {topic!r}")


# ---------------------------------------------------------------------------------------------
# Message envelope


def new_message_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Message:
    """A telemetry or cloud-to-device message: body bytes plus system and custom properties.

    Names follow azure-iot-device's ``Message``. ``message_id`` is always set (a fresh uuid by
    default): receivers suppress duplicates by it.
    """

    data: bytes = b""
    message_id: str = field(default_factory=new_message_id)
    correlation_id: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    custom_properties: dict[str, str] = field(default_factory=dict)
    creation_time: str | None = None
    user_id: str | None = None
    to: str | None = None
    expiry_time: str | None = None
    output_name: str | None = None
    input_name: str | None = None
    connection_device_id: str | None = None
    connection_module_id: str | None = None

    @classmethod
    def from_body(cls, body: bytes | str | dict[str, Any] | list[Any], **kwargs: Any) -> Message:
        """Build from bytes, text or a JSON-able object (JSON sets content type/encoding)."""
        if isinstance(body, bytes):
            return cls(data=body, **kwargs)
        if isinstance(body, str):
            kwargs.setdefault("content_encoding", "utf-8")
            return cls(data=body.encode(), **kwargs)
        kwargs.setdefault("content_type", "application/json")
        kwargs.setdefault("content_encoding", "utf-8")
        return cls(data=json.dumps(body, separators=(",", ":")).encode(), **kwargs)

    def system_properties(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, attr in _SYSTEM_KEYS.items():
            value = getattr(self, attr)
            if value is not None:
                out[key] = str(value)
        return out

    def property_bag(self) -> dict[str, str]:
        """System properties first, then custom ones (custom keys must not start with ``$.``)."""
        bag = self.system_properties()
        for key, value in self.custom_properties.items():
            if key.startswith("$."):
                raise ProtocolError(f"custom property {key!r} uses the reserved '$.' prefix")
            bag[key] = str(value)
        return bag

    @classmethod
    def from_property_bag(cls, data: bytes, bag: dict[str, str]) -> Message:
        kwargs: dict[str, Any] = {}
        custom: dict[str, str] = {}
        for key, value in bag.items():
            attr = _SYSTEM_KEYS.get(key)
            if attr is not None:
                kwargs[attr] = value
            elif not key.startswith("$"):
                custom[key] = value
        if "message_id" not in kwargs:
            kwargs["message_id"] = ""
        return cls(data=data, custom_properties=custom, **kwargs)

    def telemetry_topic(self, device_id: str, module_id: str | None = None) -> str:
        return telemetry_topic(device_id, self.property_bag(), module_id)

    def c2d_topic(self, device_id: str, module_id: str | None = None) -> str:
        return c2d_topic(device_id, self.property_bag(), module_id)

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.data.decode(self.content_encoding or "utf-8"))

    def text(self) -> str:
        return self.data.decode(self.content_encoding or "utf-8", errors="replace")


def message_from_topic(topic: str, payload: bytes) -> tuple[Topic, Message]:
    """Parse a telemetry or cloud-to-device publish into its topic and message."""
    parsed = parse_topic(topic)
    if parsed.kind not in (Kind.TELEMETRY, Kind.C2D):
        raise ProtocolError(f"not a message topic: {topic!r}")
    return parsed, Message.from_property_bag(payload, parsed.properties)


# ---------------------------------------------------------------------------------------------
# Presence


ONLINE = "online"
OFFLINE = "offline"


def presence_payload(state: str, client_id: str | None = None, conn: str | None = None) -> bytes:
    """JSON ``{"state": "online"|"offline", "ts": <unix seconds>, "clientId": ..., "conn": ...}``.

    ``conn`` names one connection attempt (its will and its online message share it), so a
    receiver can ignore the will of an older connection that arrives after a newer online.
    """
    if state not in (ONLINE, OFFLINE):
        raise ProtocolError(f"bad presence state {state!r}")
    body: dict[str, Any] = {"state": state, "ts": time.time()}
    if client_id:
        body["clientId"] = client_id
    if conn:
        body["conn"] = conn
    return json.dumps(body).encode()


def parse_presence(payload: bytes) -> tuple[str, float | None]:
    """Return (state, timestamp). An empty retained payload means offline (cleared)."""
    if not payload:
        return OFFLINE, None
    try:
        body = json.loads(payload)
        state = body["state"]
        ts = body.get("ts")
    except (ValueError, KeyError, TypeError) as exc:
        text = payload.decode(errors="replace").strip()
        if text in (ONLINE, OFFLINE):
            return text, None
        raise ProtocolError("bad presence payload") from exc
    if state not in (ONLINE, OFFLINE):
        raise ProtocolError(f"bad presence state {state!r}")
    return state, float(ts) if isinstance(ts, int | float) else None


# ---------------------------------------------------------------------------------------------
# Status codes used on response topics

STATUS_OK = 200
STATUS_NO_CONTENT = 204
STATUS_BAD_REQUEST = 400
STATUS_NOT_FOUND = 404
STATUS_PRECONDITION_FAILED = 412
STATUS_TOO_LARGE = 413
STATUS_TOO_MANY = 429
STATUS_SERVER_ERROR = 500
STATUS_TIMEOUT = 504


# ---------------------------------------------------------------------------------------------
# Credentials derived from symmetric keys

SECONDARY_SUFFIX = "/secondary"
"""MQTT user name suffix for the secondary key (``{deviceId}/secondary``).

A mosquitto password file holds one password per user, so each device has two users: its id
(primary key) and ``{id}/secondary`` (secondary key). ``/`` cannot appear in an id, so the alias
never collides with another device, and the ``%u`` ACL pattern expands it into the device's own
subtree (the alias gets an explicit ``topic readwrite devices/{id}/#`` line in the ACL file).
"""


def mqtt_username(device_id: str, slot: str = "primary") -> str:
    validate_id(device_id, "device id")
    if slot == "primary":
        return device_id
    if slot == "secondary":
        return device_id + SECONDARY_SUFFIX
    raise ProtocolError(f"unknown key slot {slot!r}")


def device_of_username(username: str) -> tuple[str, str]:
    """(device id, slot) of an MQTT user name built by :func:`mqtt_username`."""
    if username.endswith(SECONDARY_SUFFIX):
        return username[: -len(SECONDARY_SUFFIX)], "secondary"
    return username, "primary"


def mqtt_password(device_id: str, symmetric_key: str) -> str:
    """The MQTT password for a device: HMAC-SHA256 of the device id under the symmetric key.

    The key itself never travels; the broker's password file stores a salted hash of this value.
    """
    import base64
    import binascii
    import hashlib
    import hmac

    try:
        raw = base64.b64decode(symmetric_key, validate=True)
    except (binascii.Error, ValueError):
        raw = symmetric_key.encode()
    digest = hmac.new(raw, b"edgefleet-mqtt\n" + device_id.encode(), hashlib.sha256).digest()
    return "ef1." + base64.urlsafe_b64encode(digest).decode().rstrip("=")
