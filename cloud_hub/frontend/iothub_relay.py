"""One IoT Hub-dialect connection relayed to the broker, packet by packet, with every topic
rewritten between the dialect and the identity's own subtree (``edgefleet.iothub_dialect``).

The broker side is a connection the front end opened as that identity; the broker's ACL confines
it to the same subtree, so the rewrite and the ACL each keep the device to its own topics.
"""

from __future__ import annotations

import asyncio
import logging

from edgefleet import iothub_dialect as iothub
from edgefleet import mqtt_packets as mp

log = logging.getLogger(__name__)

UPSTREAM_LIMIT = 2 * 1024 * 1024
"""Largest packet taken from the broker (its own limit is 1 MiB)."""


class IotHubRelay:
    """Both directions of one connection; ``run`` returns when either side ends or the device
    breaks the dialect's rules (a publish outside its identity, a second CONNECT)."""

    def __init__(
        self,
        ident: iothub.IotHubIdentity,
        device: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        broker: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.ident = ident
        self.device_reader, self.device_writer = device
        self.broker_reader, self.broker_writer = broker
        self._subscribed: dict[int, list[bool]] = {}
        """Packet id of a forwarded SUBSCRIBE -> which of its filters were forwarded."""
        self.disconnected = False
        """The device ended with a DISCONNECT."""

    async def from_device(self) -> None:
        while True:
            ptype, flags, body = await mp.read_packet(self.device_reader)
            head = (ptype << 4) | flags
            if ptype == mp.PUBLISH:
                raw, _pos = mp.read_string(body, 0)
                topic = raw.decode(errors="replace")
                mapped = iothub.inbound_publish(self.ident, topic)
                if mapped is None:
                    log.info("closing %s: it published to %r", self.ident.client_id, topic)
                    return
                self.broker_writer.write(mp.packet(head, mp.with_topic(body, mapped)))
            elif ptype == mp.SUBSCRIBE:
                self._subscribe(body)
            elif ptype == mp.UNSUBSCRIBE:
                self._unsubscribe(body)
            elif ptype == mp.CONNECT:
                log.info("closing %s: a second CONNECT", self.ident.client_id)
                return
            elif ptype == mp.DISCONNECT:
                self.disconnected = True
                return
            else:  # PUBACK, PINGREQ and the QoS 2 flow carry no topic
                self.broker_writer.write(mp.packet(head, body))
            await self.broker_writer.drain()
            await self.device_writer.drain()

    def _subscribe(self, body: bytes) -> None:
        pid, filters = mp.parse_subscribe(body)
        mapped = [(iothub.inbound_filter(self.ident, f), qos) for f, qos in filters]
        forwarded = [(f, qos) for f, qos in mapped if f is not None]
        if not forwarded:
            self.device_writer.write(mp.suback(pid, bytes([mp.SUBSCRIPTION_REFUSED] * len(mapped))))
            return
        self._subscribed[pid] = [f is not None for f, _qos in mapped]
        self.broker_writer.write(mp.subscribe_packet(pid, forwarded))

    def _unsubscribe(self, body: bytes) -> None:
        pid, filters = mp.parse_unsubscribe(body)
        forwarded = [m for f in filters if (m := iothub.inbound_filter(self.ident, f)) is not None]
        if forwarded:
            self.broker_writer.write(mp.unsubscribe_packet(pid, forwarded))
        else:
            self.device_writer.write(mp.unsuback(pid))

    async def from_broker(self) -> None:
        while True:
            ptype, flags, body = await mp.read_packet(self.broker_reader, UPSTREAM_LIMIT)
            head = (ptype << 4) | flags
            if ptype == mp.PUBLISH:
                raw, pos = mp.read_string(body, 0)
                mapped = iothub.outbound_topic(self.ident, raw.decode(errors="replace"))
                if mapped is None:  # not for this identity: acknowledged, never delivered
                    if (flags >> 1) & 0x03 == 1:
                        self.broker_writer.write(mp.puback(int.from_bytes(body[pos : pos + 2])))
                    continue
                self.device_writer.write(mp.packet(head, mp.with_topic(body, mapped)))
            elif ptype == mp.SUBACK:
                self.device_writer.write(self._suback(body))
            else:  # PUBACK, PINGRESP, UNSUBACK, the QoS 2 flow
                self.device_writer.write(mp.packet(head, body))
            await self.device_writer.drain()

    def _suback(self, body: bytes) -> bytes:
        """The broker's SUBACK with 0x80 put back where a filter was refused here."""
        pid, codes = mp.parse_suback(body)
        forwarded = self._subscribed.pop(pid, None)
        if forwarded is None:
            return mp.suback(pid, codes)
        granted = iter(codes)
        merged = bytes(
            next(granted, mp.SUBSCRIPTION_REFUSED) if ok else mp.SUBSCRIPTION_REFUSED
            for ok in forwarded
        )
        return mp.suback(pid, merged)
