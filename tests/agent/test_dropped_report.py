"""Messages the edge hub drops (evicted past its store's cap, expired) reach the hub at once in
the ``$edgeAgent`` reported properties; the other queue counters are reported slowly."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from edge_agent.agent import Agent, dropped_changed
from edge_agent.deployment_file import DeploymentStore
from edge_agent.reconciler import Reconciler


class RecordingChannel:
    device_id = "dev"

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.sent = threading.Condition()

    def start(self, on_desired: Any, on_method: Any) -> None:
        pass

    def get_desired(self, module: str, timeout: float) -> dict[str, Any] | None:
        return None  # the hub is unreachable for desired state: the agent keeps what it has

    def report(self, patch: dict[str, Any]) -> bool:
        with self.sent:
            self.reports.append(patch)
            self.sent.notify_all()
        return True

    def close(self) -> None:
        pass

    def wait_for(self, cond: Any, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.sent:
            while True:
                for patch in reversed(self.reports):
                    saf = patch["systemModules"]["edgeHub"].get("storeAndForward") or {}
                    if cond(saf):
                        return saf
                left = deadline - time.monotonic()
                assert left > 0, f"no such report in {self.reports[-3:]}"
                self.sent.wait(left)


class CountingHub:
    def __init__(self) -> None:
        self.counters = {"queuedMessages": 0, "evictedMessages": 0, "expiredMessages": 0}

    def apply(self, desired: Any) -> None:
        pass

    def module_env(self, module: str, gateway_address: str | None = None) -> dict[str, str]:
        return {}

    def retain_modules(self, modules: Any) -> None:
        pass

    def status(self) -> str:
        return "running"

    def stop(self) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return dict(self.counters)


def test_evictions_are_reported_at_once(tmp_path: Path) -> None:
    channel, hub = RecordingChannel(), CountingHub()
    agent = Agent(
        "dev",
        channel,
        Reconciler({}),
        DeploymentStore(tmp_path),
        "process",
        debounce=0.01,
        edge_hub_factory=lambda _agent: hub,
    )
    agent.start()
    try:
        channel.wait_for(lambda saf: saf.get("evictedMessages") == 0)
        hub.counters.update(queuedMessages=40, evictedMessages=17)
        saf = channel.wait_for(lambda saf: saf.get("evictedMessages") == 17)
        assert saf["queuedMessages"] == 40  # refreshed with them
        hub.counters.update(expiredMessages=3)
        channel.wait_for(lambda saf: saf.get("expiredMessages") == 3)
    finally:
        agent.stop()


def test_only_dropped_counters_force_a_refresh() -> None:
    old = {"queuedMessages": 5, "evictedMessages": 1, "expiredMessages": 0}
    assert not dropped_changed(old, {**old, "queuedMessages": 900, "receivedMessages": 7})
    assert dropped_changed(old, {**old, "evictedMessages": 2})
    assert dropped_changed(old, {**old, "expiredMessages": 1})
    assert dropped_changed(None, old)
