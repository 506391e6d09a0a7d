"""The front end's pure parts: reading CONNECTs of both MQTT versions our clients send, and the
IoT Hub-dialect relay's rewrite of packets between a device and its broker connection."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from cloud_hub.frontend.iothub_relay import IotHubRelay
from edgefleet import mqtt_packets as mp
from edgefleet.iothub_dialect import IotHubIdentity


def _connect_body(level: int, props: bytes = b"", will: bool = False) -> bytes:
    flags = 0xC2 | (0x04 if will else 0)
    body = mp.string("MQTT") + bytes([level, flags]) + struct.pack("!H", 30)
    if level == 5:
        body += bytes([len(props)]) + props
    body += mp.string("dev-1")
    if will:
        body += (b"\x00" if level == 5 else b"") + mp.string("devices/dev-1/presence")
        body += mp.string(b"offline")
    return body + mp.string("dev-1") + mp.string(b"secret")


@pytest.mark.parametrize("level", [4, 5])
@pytest.mark.parametrize("will", [False, True])
def test_connect_of_mqtt_311_and_5_gives_the_credentials(level: int, will: bool) -> None:
    props = bytes([0x11, 0, 0, 0, 60]) if level == 5 else b""  # session expiry interval
    connect = mp.parse_connect(_connect_body(level, props, will))
    assert connect is not None
    assert (connect.client_id, connect.username, connect.password) == ("dev-1", "dev-1", b"secret")
    assert connect.level == level and connect.keepalive == 30


def test_connect_with_trailing_garbage_or_truncated_is_a_violation() -> None:
    body = _connect_body(4)
    with pytest.raises(mp.ProtocolViolation):
        mp.parse_connect(body + b"junk")
    with pytest.raises(mp.ProtocolViolation):
        mp.parse_connect(body[:-3])
    assert mp.parse_connect(mp.string("HTTP") + bytes([4, 0, 0, 0])) is None


class _Sink:
    """A stream writer that keeps what is written."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    async def packets(self) -> list[tuple[int, bytes]]:
        reader = asyncio.StreamReader()
        reader.feed_data(bytes(self.data))
        reader.feed_eof()
        out = []
        while not reader.at_eof():
            ptype, _flags, body = await mp.read_packet(reader)
            out.append((ptype, body))
        return out


def _relay(device_in: bytes, broker_in: bytes) -> tuple[IotHubRelay, _Sink, _Sink]:
    dev_reader, up_reader = asyncio.StreamReader(), asyncio.StreamReader()
    dev_reader.feed_data(device_in)
    dev_reader.feed_eof()
    up_reader.feed_data(broker_in)
    up_reader.feed_eof()
    to_device, to_broker = _Sink(), _Sink()
    relay = IotHubRelay(
        IotHubIdentity("dev-1"),
        (dev_reader, to_device),  # type: ignore[arg-type]
        (up_reader, to_broker),  # type: ignore[arg-type]
    )
    return relay, to_device, to_broker


async def _run(flow: Any) -> None:
    try:
        await flow
    except asyncio.IncompleteReadError:
        pass


def test_subscribe_forwards_own_filters_and_refuses_the_rest() -> None:
    async def scenario() -> None:
        filters = [("$iothub/#", 1), ("$iothub/twin/res/#", 1), ("devices/dev-2/#", 0)]
        relay, to_device, to_broker = _relay(mp.subscribe_packet(7, filters), b"")
        await _run(relay.from_device())
        ((ptype, body),) = await to_broker.packets()
        assert ptype == mp.SUBSCRIBE and mp.parse_subscribe(body) == (
            7,
            [("devices/dev-1/twin/res/#", 1)],
        )
        relay.broker_reader = asyncio.StreamReader()
        relay.broker_reader.feed_data(mp.suback(7, bytes([1])))
        relay.broker_reader.feed_eof()
        await _run(relay.from_broker())
        ((ptype, body),) = await to_device.packets()
        assert ptype == mp.SUBACK and mp.parse_suback(body) == (7, bytes([0x80, 1, 0x80]))

    asyncio.run(scenario())


def test_publishes_are_rewritten_both_ways_and_a_foreign_one_ends_the_relay() -> None:
    async def scenario() -> None:
        device_in = mp.publish_packet("$iothub/twin/GET/?$rid=3", b"", 1, pid=5)
        device_in += mp.publish_packet("devices/dev-2/messages/events/", b"x", 1, pid=6)
        device_in += mp.publish_packet("devices/dev-1/messages/events/", b"late", 1, pid=8)
        broker_in = mp.publish_packet("devices/dev-1/twin/res/200/?$rid=3", b"{}", 1, pid=9)
        broker_in += mp.publish_packet("devices/dev-1/presence", b"online", 1, pid=10)
        relay, to_device, to_broker = _relay(device_in, broker_in)
        await relay.from_device()  # returns at the foreign publish; the next is never read
        await _run(relay.from_broker())
        sent = await to_broker.packets()
        assert [mp.parse_publish(0x02, b).topic for t, b in sent if t == mp.PUBLISH] == [
            "devices/dev-1/twin/get/?$rid=3"
        ]
        assert (mp.PUBACK, struct.pack("!H", 10)) in sent  # not for the device: acknowledged
        delivered = await to_device.packets()
        assert [mp.parse_publish(0x02, b) for _t, b in delivered] == [
            mp.Publish("$iothub/twin/res/200/?$rid=3", b"{}", 1, 9)
        ]

    asyncio.run(scenario())
