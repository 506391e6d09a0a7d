"""Routing a message to its sinks: module inputs through the local broker, ``$upstream`` into the
store-and-forward queue (through the group commit).

``output_message`` and ``plan_deliveries`` decide; ``Dispatcher`` acts on the decision in the
event loop's thread and keeps the routing counters.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field

from edge_agent.edgehub.broker import LocalBroker
from edge_agent.edgehub.group_commit import GroupCommit
from edge_agent.edgehub.routes import RouteMessage, RouteResult, RouteTable, module_source
from edge_agent.edgehub.store_and_forward import Item
from edge_agent.edgehub.twin_notify import TwinChange
from edgefleet import module_topics as t
from edgefleet import protocol as p

log = logging.getLogger("edgefleet.edgehub")

DEFAULT_TTL_SECS = 7200
MAX_HELD = 10_000  # messages kept per module until it first subscribes


@dataclass
class RoutingCounters:
    routed: int = 0
    to_modules: int = 0
    unrouted: int = 0
    oversized: int = 0
    twin_changes: int = 0

    def stats(self) -> dict[str, int]:
        return {
            "routedMessages": self.routed,
            "moduleDeliveries": self.to_modules,
            "unroutedMessages": self.unrouted,
            "oversizedMessages": self.oversized,
            "twinChangeNotifications": self.twin_changes,
        }


@dataclass(frozen=True)
class Deliveries:
    """Where one routed message goes: items for the store, ``(module, input topic)`` pairs."""

    upstream: list[Item] = field(default_factory=list)
    modules: list[tuple[str, str]] = field(default_factory=list)


def output_message(
    device_id: str, module_id: str, local: t.LocalTopic, payload: bytes
) -> tuple[RouteMessage, dict[str, str]]:
    """A module's output as route conditions see it, and the property bag it travels with."""
    bag = dict(local.bag or {})
    if local.name:
        bag[p.SYS_OUTPUT_NAME] = local.name
    else:  # IoT Hub's ``send_message`` of a module: no output, source /messages/modules/<m>
        bag.pop(p.SYS_OUTPUT_NAME, None)
    bag[p.SYS_CONNECTION_DEVICE_ID] = device_id
    bag[p.SYS_CONNECTION_MODULE_ID] = module_id
    msg = p.Message.from_property_bag(payload, bag)
    system = {
        "messageId": msg.message_id or None,
        "correlationId": msg.correlation_id,
        "contentType": msg.content_type,
        "contentEncoding": msg.content_encoding,
        "connectionDeviceId": device_id,
        "connectionModuleId": module_id,
        "outputName": local.name or None,
        "userId": msg.user_id,
        "to": msg.to,
        "creationTime": msg.creation_time,
    }
    route_msg = RouteMessage(
        module_source(module_id, local.name or None),
        payload,
        msg.custom_properties,
        {k: v for k, v in system.items() if v is not None},
    )
    return route_msg, bag


def plan_deliveries(
    results: list[RouteResult],
    device_id: str,
    module_id: str,
    bag: dict[str, str],
    payload: bytes,
    default_ttl: float,
) -> Deliveries:
    """The store items and module inputs for the routes a message matched."""
    out = Deliveries()
    encoded = p.encode_property_bag(bag)  # once for every sink
    for result in results:
        sink = result.sink
        if sink.type == "system":
            ttl = result.ttl_secs or default_ttl
            out.upstream.append(Item(module_id, encoded, payload, result.priority, ttl))
        elif sink.module and sink.input:
            in_bag = p.extend_property_bag(encoded, bag, p.SYS_INPUT_NAME, sink.input)
            out.modules.append(
                (sink.module, t.input_topic_encoded(device_id, sink.module, sink.input, in_bag))
            )
    return out


class Dispatcher:
    """Routes messages with the current table (call everything in the loop thread)."""

    def __init__(self, device_id: str, broker: LocalBroker, commit: GroupCommit) -> None:
        self.device_id = device_id
        self.table = RouteTable()
        self.default_ttl: float = DEFAULT_TTL_SECS
        self.counters = RoutingCounters()
        self._broker = broker
        self._commit = commit
        self._held: dict[str, deque[tuple[str, bytes]]] = {}

    def module_output(
        self, module_id: str, local: t.LocalTopic, payload: bytes
    ) -> Awaitable[None] | None:
        """Route a module's output; the PUBACK waits for the returned future (if any)."""
        if len(payload) > p.MAX_MESSAGE_BYTES:  # the hub would refuse it: never store it
            log.warning(
                "dropped a %d-byte message from %s (limit 256 KiB)", len(payload), module_id
            )
            self.counters.oversized += 1
            return None
        route_msg, bag = output_message(self.device_id, module_id, local, payload)
        return self.route(module_id, route_msg, bag, payload)

    def twin_change(self, module_id: str, change: TwinChange) -> asyncio.Future[None] | None:
        """Route the twin change notification of ``module_id``'s accepted reported patch."""
        self.counters.twin_changes += 1
        return self.route(module_id, change.route_message, change.bag, change.body)

    def route(
        self, module_id: str, route_msg: RouteMessage, bag: dict[str, str], payload: bytes
    ) -> asyncio.Future[None] | None:
        """Deliver to every matching endpoint; the future resolves once stored for upstream."""
        results = self.table.evaluate(route_msg)
        if not results:
            self.counters.unrouted += 1
            return None
        self.counters.routed += 1
        plan = plan_deliveries(results, self.device_id, module_id, bag, payload, self.default_ttl)
        future: asyncio.Future[None] | None = None
        for item in plan.upstream:
            future = self._commit.add(item)
        for target, topic in plan.modules:
            if not self._broker.publish(topic, payload, 1):
                self._hold(target, topic, payload)
            self.counters.to_modules += 1
        return future

    def _hold(self, module_id: str, topic: str, payload: bytes) -> None:
        """Keep a message for a module that has not subscribed yet (bounded, oldest dropped)."""
        queue = self._held.setdefault(module_id, deque(maxlen=MAX_HELD))
        queue.append((topic, payload))

    def on_subscribed(self, module_id: str) -> None:
        """Pass on what was held for the module until it subscribed."""
        queue = self._held.pop(module_id, None)
        while queue:
            topic, payload = queue.popleft()
            if not self._broker.publish(topic, payload, 1):
                self._hold(module_id, topic, payload)
                return
