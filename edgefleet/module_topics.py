"""Topics between modules and the edge hub on the device's local broker.

Every local topic lives under ``devices/{deviceId}/modules/{moduleId}/``, the subtree the local
broker's ACL gives each module (user name = module id), so a module cannot act as another. Twin
and method topics are spelled exactly as in the device <-> hub contract (``edgefleet.protocol``);
only message outputs/inputs and module-initiated method calls are local:

    .../outputs/{output}/{bag}                  module -> hub    a message on an output
    .../inputs/{input}/{bag}                    hub -> module    a routed message for an input
    .../twin/get/?$rid=R, .../twin/reported/?$rid=R            -> .../twin/res/{status}/?$rid=R
    .../twin/desired/?$version=V                hub -> module    desired patch
    .../methods/POST/{name}/?$rid=R             hub -> module    direct method (.../methods/res/)
    .../invoke/{device}/{module}/{name}/?$rid=R module -> hub    invoke a method on another module
    .../invoke/res/{status}/?$rid=R             hub -> module    its response
    .../refused/{status}/{bag}                  hub -> module    an output message not stored

A refusal notice (bag: the refused message's ``$.mid``; body ``{"status", "message"}``, status
507 for a full disk, 503 for another store failure) goes, QoS 0, only to a module subscribed to
``.../refused/#``, just before the PUBACK of the refused publish: MQTT 5's PUBACK reason code on
an MQTT 3.1.1 connection. A client not subscribed gets no PUBACK; its connection is closed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import quote

from edgefleet import protocol as p
from edgefleet.digits import ascii_uint


@functools.lru_cache(maxsize=1024)  # a device has few modules; every routed message asks
def module_prefix(device_id: str, module_id: str) -> str:
    return f"{p.ROOT}/{p.validate_id(device_id, 'device id')}/modules/{module_id}"


def output_topic(device_id: str, module_id: str, output: str, bag: dict[str, str]) -> str:
    p.validate_id(output, "output name")
    return f"{module_prefix(device_id, module_id)}/outputs/{output}/{p.encode_property_bag(bag)}"


def input_topic(device_id: str, module_id: str, input_name: str, bag: dict[str, str]) -> str:
    return input_topic_encoded(device_id, module_id, input_name, p.encode_property_bag(bag))


def input_topic_encoded(device_id: str, module_id: str, input_name: str, encoded_bag: str) -> str:
    """``input_topic`` with the property bag already encoded."""
    return f"{module_prefix(device_id, module_id)}/inputs/{input_name}/{encoded_bag}"


def invoke_topic(device_id: str, module_id: str, target: str, method: str, rid: str) -> str:
    """``target`` is ``device`` or ``device/module``."""
    dev, _, mod = target.partition("/")
    rest = f"{p.validate_id(dev, 'device id')}/{mod or '$device'}/{p.validate_id(method, 'method')}"
    return f"{module_prefix(device_id, module_id)}/invoke/{rest}/?$rid={quote(rid, safe='')}"


def invoke_response_topic(device_id: str, module_id: str, status: int, rid: str) -> str:
    prefix = module_prefix(device_id, module_id)
    return f"{prefix}/invoke/res/{status}/?$rid={quote(rid, safe='')}"


def refused_topic(device_id: str, module_id: str, status: int, message_id: str | None) -> str:
    bag = {p.SYS_MESSAGE_ID: message_id} if message_id else {}
    return f"{module_prefix(device_id, module_id)}/refused/{status}/{p.encode_property_bag(bag)}"


def module_subscriptions(device_id: str, module_id: str) -> list[str]:
    prefix = module_prefix(device_id, module_id)
    return [
        f"{prefix}/inputs/#",
        f"{prefix}/twin/res/#",
        f"{prefix}/twin/desired/#",
        f"{prefix}/methods/POST/#",
        f"{prefix}/invoke/res/#",
        f"{prefix}/refused/#",
    ]


def acl_prefix(device_id: str, username: str) -> str:
    """The only subtree a module's user may publish or subscribe to."""
    return f"{module_prefix(device_id, username)}/"


@dataclass(frozen=True)
class LocalTopic:
    kind: str  # output | input | invoke | invoke_res | twin_get | twin_reported | method_res | ...
    module_id: str
    name: str = ""  # output/input name, or the invoked method
    bag: dict[str, str] | None = None
    rid: str | None = None
    status: int | None = None
    target_device: str | None = None
    target_module: str | None = None
    version: int | None = None


def parse_local(topic: str) -> LocalTopic:
    """Parse a local topic; raises ``protocol.ProtocolError`` for anything else."""
    parts = topic.split("/")
    if len(parts) >= 6 and parts[0] == p.ROOT and parts[2] == "modules":
        module_id, head = parts[3], parts[4]
        if head in ("outputs", "inputs") and len(parts) >= 6 and parts[5]:
            bag = p.decode_property_bag("/".join(parts[6:]))
            kind = "output" if head == "outputs" else "input"
            return LocalTopic(kind, module_id, parts[5], bag)
        refused = ascii_uint(parts[5]) if head == "refused" and len(parts) == 7 else None
        if refused is not None:
            bag = p.decode_property_bag(parts[6])
            return LocalTopic("refused", module_id, bag=bag, status=refused)
        if head == "invoke":
            if len(parts) == 8 and parts[5] == "res":
                bag = p.decode_property_bag(parts[7])
                status = ascii_uint(parts[6])
                return LocalTopic("invoke_res", module_id, rid=bag.get("$rid"), status=status)
            if len(parts) == 9:
                bag = p.decode_property_bag(parts[8])
                mod = None if parts[6] == "$device" else parts[6]
                return LocalTopic(
                    "invoke",
                    module_id,
                    parts[7],
                    rid=bag.get("$rid"),
                    target_device=parts[5],
                    target_module=mod,
                )
    parsed = p.parse_topic(topic)
    if parsed.module_id is None:
        raise p.ProtocolError(f"not a module topic: {topic!r}")
    return LocalTopic(
        parsed.kind.value,
        parsed.module_id,
        parsed.method or "",
        parsed.properties,
        rid=parsed.rid,
        status=parsed.status,
        version=parsed.version,
    )
