"""Telemetry retention: the pruner on real SQLite and PostgreSQL, and a real hub serving with it.

The clock is controlled through stored timestamps: old messages are inserted with an old
``enqueued_at`` through the storage layer; nothing waits for time to pass.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select

from cloud_hub.db import Database
from cloud_hub.hub import Hub, open_hub
from cloud_hub.mqtt.retention import MessagePruner, RetentionPolicy
from cloud_hub.mqtt.stored_messages import list_messages
from cloud_hub.mqtt.tables import MessageRow
from cloud_hub.settings import HubSettings
from edgefleet import protocol as p
from tests.support.hub import running_hub
from tests.support.mqtt import create_device, device_client, wait_until
from tests.support.pg import temporary_database

# The clock of the unit tests: every stamp and every prune time derives from it (the real hub
# at the end of this file runs on the real clock, so its stamps come from the real clock too).
NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('retention') / 'hub.db'}"
    else:
        with temporary_database() as url:
            yield url


@pytest.fixture
def hub(database_url: str, tmp_path: Path) -> Iterator[Hub]:
    hub = open_hub(HubSettings(data_dir=tmp_path / "hub", database_url=database_url))
    with hub.db.write() as session:
        session.execute(delete(MessageRow))
    try:
        yield hub
    finally:
        hub.close()


def add_messages(db: Database, device_id: str, count: int, enqueued: datetime, tag: str) -> None:
    rows = [
        {
            "device_id": device_id,
            "module_id": "",
            "message_id": f"{tag}-{i}",
            "enqueued_at": enqueued + timedelta(seconds=i),
            "properties": {"system": {}, "custom": {}},
            "body": f'{{"i": {i}}}'.encode(),
        }
        for i in range(count)
    ]
    with db.write() as session:
        session.execute(insert(MessageRow), rows)


def stored(db: Database, device_id: str | None = None) -> list[str]:
    stmt = select(MessageRow.message_id).order_by(MessageRow.seq)
    if device_id is not None:
        stmt = stmt.where(MessageRow.device_id == device_id)
    with db.read() as session:
        return list(session.scalars(stmt))


def test_messages_older_than_the_retention_go_newer_stay(hub: Hub) -> None:
    add_messages(hub.db, "a", 23, NOW - timedelta(days=8), "old")
    add_messages(hub.db, "b", 9, NOW - timedelta(hours=169), "old")
    add_messages(hub.db, "a", 4, NOW - timedelta(hours=167), "new")
    add_messages(hub.db, "b", 2, NOW - timedelta(minutes=1), "new")
    batches: list[int] = []
    pruner = MessagePruner(hub.db, RetentionPolicy(hours=168, batch=7), on_removed=batches.append)

    assert pruner.prune_once(NOW) == 32
    assert stored(hub.db, "a") == [f"new-{i}" for i in range(4)]
    assert stored(hub.db, "b") == ["new-0", "new-1"]
    assert sum(batches) == 32 and max(batches) <= 7 and len(batches) >= 5  # small transactions
    assert pruner.prune_once(NOW) == 0


def test_count_cap_keeps_the_newest_n_per_device(hub: Hub) -> None:
    add_messages(hub.db, "busy", 12, NOW - timedelta(minutes=30), "m")
    add_messages(hub.db, "quiet", 3, NOW - timedelta(minutes=30), "m")
    add_messages(hub.db, "exact", 5, NOW - timedelta(minutes=30), "m")
    pruner = MessagePruner(hub.db, RetentionPolicy(hours=0, count=5, batch=2))

    assert pruner.prune_once(NOW) == 7
    assert stored(hub.db, "busy") == [f"m-{i}" for i in range(7, 12)]
    assert stored(hub.db, "quiet") == ["m-0", "m-1", "m-2"]
    assert stored(hub.db, "exact") == [f"m-{i}" for i in range(5)]


def test_zero_keeps_forever(hub: Hub) -> None:
    add_messages(hub.db, "a", 5, datetime(2001, 1, 1, tzinfo=UTC), "ancient")
    policy = RetentionPolicy.from_settings(
        {"message_retention_hours": 0, "message_retention_count": 0}
    )
    assert not policy.enabled
    passes: list[int] = []
    pruner = MessagePruner(hub.db, policy, on_pass=lambda: passes.append(1))
    assert pruner.prune_once(NOW) == 0
    pruner.start()  # a disabled pruner starts no thread and deletes nothing
    pruner.stop()
    assert passes == [1]
    assert stored(hub.db) == [f"ancient-{i}" for i in range(5)]
    defaults = RetentionPolicy.from_settings({})
    assert (defaults.hours, defaults.count) == (168.0, 0)


def test_ingest_while_pruning_keeps_every_new_message(hub: Hub) -> None:
    """Writes interleave with the pruner's small transactions; only expired rows go."""
    add_messages(hub.db, "busy", 3000, NOW - timedelta(days=9), "old")
    pruner = MessagePruner(hub.db, RetentionPolicy(hours=168, batch=50))
    errors: list[BaseException] = []

    def ingest() -> None:
        try:
            for k in range(40):
                add_messages(hub.db, "busy", 5, NOW, f"new{k}")
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    writer = threading.Thread(target=ingest)
    writer.start()
    removed = pruner.prune_once(NOW)
    writer.join(60)
    assert not writer.is_alive() and errors == []
    assert removed == 3000
    assert sorted(stored(hub.db)) == sorted(f"new{k}-{i}" for k in range(40) for i in range(5))


def test_paging_stays_correct_after_pruning(hub: Hub) -> None:
    hub.registry.create_device("pager", {})
    add_messages(hub.db, "pager", 10, NOW - timedelta(days=30), "old")
    first = list_messages(hub, "pager", None, 4)
    assert [m["messageId"] for m in first["messages"]] == [f"old-{i}" for i in range(4)]
    cursor = first["next"]
    add_messages(hub.db, "pager", 3, NOW, "new")

    assert MessagePruner(hub.db, RetentionPolicy(hours=1)).prune_once(NOW) == 10
    page = list_messages(hub, "pager", cursor, 2)
    assert [m["messageId"] for m in page["messages"]] == ["new-0", "new-1"]
    rest = list_messages(hub, "pager", page["next"], 10)
    assert [m["messageId"] for m in rest["messages"]] == ["new-2"]
    last = rest["next"]

    # Everything expires (the table is empty): new sequence numbers still follow the old ones,
    # so a client holding the last cursor sees the next message.
    assert MessagePruner(hub.db, RetentionPolicy(hours=1)).prune_once(NOW + timedelta(days=2)) == 3
    assert stored(hub.db) == []
    add_messages(hub.db, "pager", 1, NOW + timedelta(days=2), "after")
    after = list_messages(hub, "pager", last, 10)
    assert [m["messageId"] for m in after["messages"]] == ["after-0"]
    assert int(after["messages"][0]["sequenceNumber"]) > int(last)


# -- a real hub: options, env, start and periodic passes, stats, dedup after pruning ------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_hub_prunes_ingested_telemetry(backend: str, tmp_path: Path) -> None:
    if backend == "postgresql":
        with temporary_database() as url:
            _hub_prunes(tmp_path, url)
    else:
        _hub_prunes(tmp_path, None)


def _hub_prunes(tmp_path: Path, database_url: str | None) -> None:
    env = {"EDGEFLEET_MESSAGE_RETENTION_COUNT": "5"}
    with running_hub(
        tmp_path,
        database_url=database_url,
        env=env,
        message_retention_hours=1,
        message_prune_interval=0.2,
    ) as hub:
        db = Database(database_url or f"sqlite:///{hub.data_dir / 'hub.db'}")
        api = hub.client()
        try:

            def stats() -> dict[str, Any]:
                body: dict[str, Any] = api.request("GET", "/messaging/stats").json()
                return body

            def ids(device_id: str, since: str | None = None) -> list[str]:
                params = {"limit": 1000, **({"since": since} if since else {})}
                body = api.request("GET", f"/devices/{device_id}/messages", params=params).json()
                return [m["messageId"] for m in body["messages"]]

            assert wait_until(lambda: stats()["prunePasses"] >= 1, 30)  # the pass at start
            create_device(hub, "ret-old")
            create_device(hub, "ret-dev")
            add_messages(db, "ret-old", 40, datetime.now(UTC) - timedelta(days=2), "old")
            assert wait_until(lambda: ids("ret-old") == [], 30)

            client = device_client(hub, "ret-dev", tmp_path)
            client.connect(20)
            try:
                for i in range(8):
                    client.send_message(p.Message(b'{"v": 1}', message_id=f"m{i}"))
                assert client.wait_for_outbox_empty(30)
                assert wait_until(lambda: ids("ret-dev") == [f"m{i}" for i in range(3, 8)], 30)
                page = api.request("GET", "/devices/ret-dev/messages", params={"limit": 2}).json()
                assert [m["messageId"] for m in page["messages"]] == ["m3", "m4"]

                # m7 is still stored: suppressed (one m7, in its old place); m0 was pruned:
                # stored again, as the newest.
                client.send_message(p.Message(b"again", message_id="m7"))
                client.send_message(p.Message(b"again", message_id="m0"))
                assert client.wait_for_outbox_empty(30)
                assert wait_until(lambda: ids("ret-dev") == ["m4", "m5", "m6", "m7", "m0"], 30)
            finally:
                client.shutdown()
            assert ids("ret-dev", page["next"]) == ["m5", "m6", "m7", "m0"]
            assert wait_until(lambda: stats()["expired"] == 40 + 3 + 1, 30)
        finally:
            api.close()
            db.dispose()
    assert hub.process.returncode == 0  # SIGTERM stops the pruner with the hub
