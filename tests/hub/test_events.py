"""The in-process event bus the MQTT side and other services subscribe to."""

from __future__ import annotations

import asyncio
from typing import Any

from cloud_hub import events
from cloud_hub.events import EventBus


def test_subscribe_by_type_and_unsubscribe() -> None:
    bus = EventBus()
    desired: list[Any] = []
    everything: list[Any] = []
    stop = bus.subscribe(events.TwinDesiredChanged, desired.append)
    bus.subscribe((object,), everything.append)
    first = events.TwinDesiredChanged("d", None, {"a": 1}, 2)
    bus.publish(first)
    bus.publish(events.DeviceDeleted("d"))
    stop()
    bus.publish(events.TwinDesiredChanged("d", None, {"a": 2}, 3))
    assert desired == [first]
    assert len(everything) == 3


def test_failing_handler_does_not_stop_others() -> None:
    bus = EventBus()
    seen: list[Any] = []

    def broken(_event: Any) -> None:
        raise RuntimeError("boom")

    bus.subscribe(events.DeviceDeleted, broken)
    bus.subscribe(events.DeviceDeleted, seen.append)
    bus.publish(events.DeviceDeleted("d"))
    assert seen == [events.DeviceDeleted("d")]


def test_async_queue_receives_events_from_other_threads() -> None:
    async def scenario() -> list[Any]:
        bus = EventBus()
        queue, stop = bus.async_queue(
            asyncio.get_running_loop(), events.TwinReportedChanged, events.DeviceCreated
        )
        await asyncio.to_thread(bus.publish, events.TwinReportedChanged("d", "m", {"x": 1}, 2))
        await asyncio.to_thread(bus.publish, events.DeviceDeleted("d"))  # not subscribed
        await asyncio.to_thread(bus.publish, events.DeviceCreated("e", {}))
        got = [await asyncio.wait_for(queue.get(), 5), await asyncio.wait_for(queue.get(), 5)]
        stop()
        return got

    got = asyncio.run(scenario())
    assert got == [
        events.TwinReportedChanged("d", "m", {"x": 1}, 2),
        events.DeviceCreated("e", {}),
    ]
