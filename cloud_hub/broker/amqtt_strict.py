"""amqtt, strict about malformed packets.

amqtt's reader loop discards a packet it cannot decode (an ``MQTTError``: a wildcard in a PUBLISH
topic, a remaining length of five bytes, ...) and reads on from wherever the failed decode left
the stream, so the rest of that packet is taken for new packets. MQTT 3.1.1 wants the connection
closed instead (4.8). Decoding errors are re-raised here as :class:`MalformedPacket`, which is
not an ``MQTTError``: the reader loop then ends and amqtt closes the connection its usual way.
"""

from __future__ import annotations

from typing import Any

import amqtt.mqtt.protocol.handler as amqtt_handler
from amqtt.errors import MQTTError
from amqtt.mqtt.packet import MQTTFixedHeader


class MalformedPacket(Exception):
    """A packet that does not decode; its connection is closed."""


class _StrictFixedHeader(MQTTFixedHeader):
    @classmethod
    async def from_stream(cls, reader: Any) -> Any:
        try:
            return await super().from_stream(reader)
        except MQTTError as exc:
            raise MalformedPacket(str(exc)) from exc


_lenient_packet_class = amqtt_handler.packet_class
_strict_classes: dict[type, type] = {}


def _strict(base: type) -> type:
    async def from_stream(cls: type, reader: Any, fixed_header: Any = None) -> Any:
        try:
            return await base.from_stream.__func__(cls, reader, fixed_header=fixed_header)  # type: ignore[attr-defined]
        except MQTTError as exc:
            raise MalformedPacket(str(exc)) from exc

    return type(base.__name__, (base,), {"from_stream": classmethod(from_stream)})


def _strict_packet_class(fixed_header: Any) -> Any:
    base = _lenient_packet_class(fixed_header)
    strict = _strict_classes.get(base)
    if strict is None:
        strict = _strict_classes[base] = _strict(base)
    return strict


def install() -> None:
    """Make every amqtt protocol handler of this process strict (idempotent)."""
    amqtt_handler.MQTTFixedHeader = _StrictFixedHeader
    amqtt_handler.packet_class = _strict_packet_class
