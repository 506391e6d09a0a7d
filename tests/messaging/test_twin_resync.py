"""The SDK's twin resync after a (re)connect: a connection on which the broker acknowledges
nothing is dropped after three tries; one whose publishes are acknowledged waits for a hub that
answers late (after an outage, behind a backlog) instead of reconnecting every few seconds."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

from edgefleet.sdk import device_twin


class _NoWait:
    """``link.stop``: never set, and its waits return at once (the backoff is not the point)."""

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float) -> bool:
        return False


def _link() -> Any:
    connected = threading.Event()
    connected.set()
    drops: list[str] = []
    return SimpleNamespace(
        settings=SimpleNamespace(device_id="dev"),
        conn="c1",
        connected=connected,
        stop=_NoWait(),
        last_ack=0.0,
        mqtt=SimpleNamespace(disconnect=lambda: drops.append("dropped")),
        drops=drops,
    )


def test_a_connection_the_broker_acknowledges_nothing_on_is_dropped_after_three_tries() -> None:
    link, calls = _link(), []

    def get_twin(timeout: float) -> dict[str, Any]:
        calls.append(timeout)
        raise TimeoutError("no answer")

    assert device_twin.fetch_twin_while_connected(link, get_twin, None) is None
    assert len(calls) == 3 and link.drops == ["dropped"]


def test_a_late_hub_answer_is_awaited_while_the_broker_acknowledges() -> None:
    link, calls = _link(), []

    def get_twin(timeout: float) -> dict[str, Any]:
        calls.append(timeout)
        link.last_ack = time.monotonic()  # the request's PUBACK
        if len(calls) < 10:
            raise TimeoutError("the hub works off its backlog")
        return {"desired": {"$version": 3}}

    assert device_twin.fetch_twin_while_connected(link, get_twin, None) == {
        "desired": {"$version": 3}
    }
    assert len(calls) == 10 and link.drops == []


def test_patience_with_an_acknowledging_broker_has_an_end(monkeypatch: Any) -> None:
    link, calls = _link(), []
    monkeypatch.setattr(device_twin, "TWIN_FETCH_PATIENCE_SECS", 0.0)

    def get_twin(timeout: float) -> dict[str, Any]:
        calls.append(timeout)
        link.last_ack = time.monotonic()
        raise TimeoutError("never")

    assert device_twin.fetch_twin_while_connected(link, get_twin, None) is None
    assert len(calls) == 3 and link.drops == ["dropped"]
