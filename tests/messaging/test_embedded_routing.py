"""The embedded broker's routing table while subscriptions change under a message in flight."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from amqtt.contexts import Action
from amqtt.session import Session

from cloud_hub.broker.embedded import EdgefleetAmqttBroker


def _session(client_id: str) -> Session:
    session = Session()
    session.client_id = client_id
    return session


def test_every_subscriber_is_offered_a_message_while_new_filters_are_subscribed() -> None:
    async def scenario() -> list[str]:
        config = {"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}}, "plugins": {}}
        broker = EdgefleetAmqttBroker(config, set())
        for client_id, topic_filter in [("hub", "devices/+/events"), ("edge", "devices/#")]:
            await broker.add_subscription((topic_filter, 1), _session(client_id))
        offered: list[str] = []
        original = broker._topic_filtering

        async def filtering(session: Session, topic: str, action: Action) -> bool:
            if action != Action.RECEIVE:
                return await original(session, topic=topic, action=action)
            offered.append(session.client_id or "")
            # another device connects meanwhile: its filters enter the table
            newcomer = _session(f"dev-{len(offered)}")
            await broker.add_subscription((f"devices/dev-{len(offered)}/twin/res/#", 1), newcomer)
            await asyncio.sleep(0)
            return await original(session, topic=topic, action=action)

        broker._topic_filtering = filtering
        await broker._broadcast_message(None, "devices/cam-1/events", b"{}", 1)
        tasks: deque[Any] = deque()
        await broker._run_broadcast(tasks)
        return offered

    assert asyncio.run(scenario()) == ["hub", "edge"]
