"""What one hub process tells the others (pure parts), and who hears other processes' events."""

from __future__ import annotations

import json

from cloud_hub import events
from cloud_hub.event_bridge import decode, encode


def test_events_cross_with_their_ids_and_without_their_documents() -> None:
    sent = events.TwinReportedChanged("d1", "$edgeAgent", {"big": "x" * 10_000}, 7)
    payload = encode(sent, "proc-a")
    assert payload is not None and len(payload) < 8000  # PostgreSQL's NOTIFY limit
    assert decode(payload, "proc-b") == events.TwinReportedChanged("d1", "$edgeAgent", {}, 7)
    updated = events.DeviceUpdated("d2", {"deviceId": "d2"}, status_changed=True)
    again = decode(encode(updated, "a") or "", "b")
    assert again == events.DeviceUpdated("d2", {}, status_changed=True, credentials_changed=False)


def test_own_unknown_and_malformed_payloads_are_ignored() -> None:
    mine = encode(events.DeviceDeleted("d1"), "proc-a") or ""
    assert decode(mine, "proc-a") is None
    assert encode(object(), "a") is None
    unknown = json.dumps({"o": "x", "t": "SomethingElse", "f": {}})
    for bad in ("", "{", "[]", unknown, json.dumps({"o": "x", "t": "DeviceDeleted", "f": {}})):
        assert decode(bad, "proc-a") is None


def test_only_subscribers_that_ask_get_other_processes_events() -> None:
    bus = events.EventBus()
    local: list[object] = []
    everything: list[object] = []
    bus.subscribe(events.DeviceDeleted, local.append)
    bus.subscribe(events.DeviceDeleted, everything.append, remote=True)
    bus.publish(events.DeviceDeleted("here"))
    bus.publish(events.DeviceDeleted("there"), remote=True)
    assert [e.device_id for e in local] == ["here"]  # type: ignore[attr-defined]
    assert [e.device_id for e in everything] == ["here", "there"]  # type: ignore[attr-defined]
