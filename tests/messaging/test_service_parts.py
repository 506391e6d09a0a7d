"""The parts of the hub's MQTT service client without a broker: the ingest writer on SQLite and
PostgreSQL, presence decisions, desired-push ordering, direct-method bookkeeping, ``since``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from cloud_hub import events
from cloud_hub.errors import InvalidInput
from cloud_hub.hub import Hub, open_hub
from cloud_hub.models import DeviceRow
from cloud_hub.mqtt.direct_methods import DeviceNotOnline, DirectMethods, GatewayTimeout
from cloud_hub.mqtt.ingest import Incoming, KnownDevices, TelemetryIngest, commit_latencies
from cloud_hub.mqtt.presence import Presence, PresenceState, is_stale, parse_presence_payload
from cloud_hub.mqtt.stats import Stats
from cloud_hub.mqtt.stored_messages import list_messages, parse_since
from cloud_hub.mqtt.twin_control import DesiredPushes
from cloud_hub.settings import HubSettings
from edgefleet import protocol as p
from tests.support.mqtt import wait_until
from tests.support.pg import temporary_database


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hub]:
    if request.param == "sqlite":
        services = open_hub(HubSettings(data_dir=tmp_path))
        yield services
        services.close()
        return
    with temporary_database() as url:
        services = open_hub(HubSettings(data_dir=tmp_path, database_url=url))
        yield services
        services.close()


def incoming(device_id: str, message_id: str, mid: int = 1, ctime: str | None = None) -> Incoming:
    message = p.Message.from_body({"n": mid})
    message.message_id = message_id
    if ctime is not None:
        message.creation_time = ctime
    return Incoming(7, mid, device_id, "", message, datetime.now(UTC))


def test_ingest_counts_duplicates_and_unknown_devices_and_touches_activity(hub: Hub) -> None:
    hub.registry.create_device("d1", {})
    stats = Stats()
    known = KnownDevices(hub.db)
    known.refresh()
    acks: list[tuple[int, int]] = []
    ingest = TelemetryIngest(
        hub.db, stats, known, lambda g, m: acks.append((g, m)), threading.Event()
    )
    ingest.store([incoming("d1", "a", 1), incoming("d1", "b", 2), incoming("ghost", "c", 3)])
    ingest.store([incoming("d1", "a", 4), incoming("d1", "d", 5)])  # "a" again: a duplicate
    assert (stats.stored, stats.duplicates, stats.rejected_unknown_device) == (3, 1, 1)
    assert stats.batches == 2 and stats.window_stored == 3
    page = list_messages(hub, "d1", None, 10)
    assert [m["messageId"] for m in page["messages"]] == ["a", "b", "d"]
    assert page["messages"][0]["enqueuedTimeUtc"].endswith("Z")
    with hub.db.read() as session:
        assert session.scalar(select(DeviceRow.last_activity_time)) is not None
    assert acks == []  # store does not acknowledge; the writer loop does after the commit


def test_a_device_created_by_another_hub_process_is_looked_up_not_refused(hub: Hub) -> None:
    clock = [100.0]
    known = KnownDevices(hub.db, clock=lambda: clock[0])
    known.refresh()
    ingest = TelemetryIngest(hub.db, Stats(), known, lambda g, m: None, threading.Event())
    assert not known.knows("late")  # a miss is remembered for a while ...
    hub.registry.create_device("late", {})  # ... by "another process": no event here
    ingest.store([incoming("late", "x", 1)])
    assert ingest._stats.rejected_unknown_device == 1
    clock[0] += 5.0  # ... then looked up again
    ingest.store([incoming("late", "y", 2)])
    assert [m["messageId"] for m in list_messages(hub, "late", None, 10)["messages"]] == ["y"]
    assert known.knows("late") and "late" in known.snapshot()


def test_ingest_writer_acknowledges_after_commit(hub: Hub) -> None:
    hub.registry.create_device("d1", {})
    stats = Stats()
    known = KnownDevices(hub.db)
    known.refresh()
    acked = threading.Event()
    acks: list[tuple[int, int]] = []

    def ack(generation: int, mid: int) -> None:
        acks.append((generation, mid))
        acked.set()

    stop = threading.Event()
    ingest = TelemetryIngest(hub.db, stats, known, ack, stop)
    topic = p.parse_topic(p.telemetry_topic("d1", {"$.mid": "m1"}))
    ingest.receive(7, 42, topic, b'{"x": 1}')
    writer = threading.Thread(target=ingest.run)
    writer.start()
    try:
        assert acked.wait(10)
    finally:
        stop.set()
        writer.join(5)
    assert acks == [(7, 42)] and stats.stored == 1


def test_oversized_telemetry_is_acknowledged_and_counted(tmp_path: Path) -> None:
    hub = open_hub(HubSettings(data_dir=tmp_path))
    try:
        stats = Stats()
        acks: list[tuple[int, int]] = []
        ingest = TelemetryIngest(
            hub.db, stats, KnownDevices(hub.db), lambda g, m: acks.append((g, m)), threading.Event()
        )
        topic = p.parse_topic(p.telemetry_topic("d1", {}))
        ingest.receive(3, 9, topic, b"x" * (p.MAX_MESSAGE_BYTES + 1))
        assert acks == [(3, 9)] and stats.rejected_too_large == 1
    finally:
        hub.close()


def test_latencies_come_from_numeric_creation_times() -> None:
    batch = [
        incoming("d", "a", ctime="100.5"),
        incoming("d", "b", ctime="2030-01-01"),
        incoming("d", "c"),
    ]
    assert commit_latencies(batch, 101.0) == [0.5]


def test_an_older_connections_offline_does_not_override_a_newer_online() -> None:
    online = PresenceState(True, 100.0, "new")
    assert is_stale(online, False, 99.0, "old")
    assert not is_stale(online, False, 101.0, "old")  # a later offline is the state
    assert not is_stale(online, False, 99.0, "new")  # the same connection's own offline
    assert not is_stale(online, False, None, "old")
    assert not is_stale(None, False, 1.0, "old")
    assert parse_presence_payload(p.presence_payload(p.ONLINE, conn="c1"))[::2] == (p.ONLINE, "c1")


def test_presence_waits_for_online_and_forgets_deleted_devices(tmp_path: Path) -> None:
    hub = open_hub(HubSettings(data_dir=tmp_path))
    try:
        hub.registry.create_device("d1", {})
        presence = Presence(hub.registry, lambda device_id: device_id == "d1")
        assert not presence.wait_online("d1", 0)
        threading.Timer(0.1, presence.update, ("d1", p.presence_payload(p.ONLINE))).start()
        assert presence.wait_online("d1", 10)
        # the registry mirror is written right after the waiters are woken
        assert wait_until(lambda: hub.registry.get_device("d1")["connectionState"] == "Connected")
        presence.forget("d1")
        assert not presence.wait_online("d1", 0)
    finally:
        hub.close()


def test_desired_pushes_keep_their_order_and_end_after_the_queue() -> None:
    sent: list[tuple[str, bytes]] = []
    pushes = DesiredPushes(lambda _messages: False, sent.extend)
    for version in range(1, 4):
        pushes.on_desired_changed(events.TwinDesiredChanged("d1", None, {"v": version}, version))
    pushes.close()
    pushes.run()
    assert [p.parse_topic(topic).version for topic, _ in sent] == [1, 2, 3]


def test_direct_methods_need_presence_and_an_answer(tmp_path: Path) -> None:
    hub = open_hub(HubSettings(data_dir=tmp_path))
    try:
        hub.registry.create_device("d1", {})
        published: list[str] = []
        online = {"d1": False}
        methods: DirectMethods

        def publish(topic: str, _payload: bytes) -> None:
            published.append(topic)
            request = p.parse_topic(topic)
            answer = p.parse_topic(p.method_response_topic("d1", 200, request.rid or ""))
            threading.Timer(0.05, methods.on_response, (answer, b'{"ok": true}')).start()

        methods = DirectMethods(hub.registry, lambda d, _t: online[d], publish)
        with pytest.raises(DeviceNotOnline):
            methods.invoke("d1", None, "reboot", {})
        online["d1"] = True
        assert methods.invoke("d1", None, "reboot", {}) == {"status": 200, "payload": {"ok": True}}
        silent = DirectMethods(hub.registry, lambda _d, _t: True, lambda _t, _b: None)
        with pytest.raises(GatewayTimeout):
            silent.invoke("d1", None, "reboot", {}, response_timeout=0.1)
    finally:
        hub.close()


def test_since_is_a_sequence_number_or_a_utc_time() -> None:
    assert parse_since(None) == (0, None)
    assert parse_since("17") == (17, None)
    assert parse_since("2030-01-02T03:04:05Z") == (0, datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    for bad in ("yesterday", "\u00b2", "\u0663", "1_000", " 17"):  # 400s, never a crash
        with pytest.raises(InvalidInput):
            parse_since(bad)
