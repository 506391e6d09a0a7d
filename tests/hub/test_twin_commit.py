"""Group commit of twin writes and the lean twin route (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlalchemy.exc import DataError

from cloud_hub import events
from cloud_hub.app import create_app
from cloud_hub.db import Database
from cloud_hub.errors import DeviceNotFound, InvalidInput, ModuleNotFound, PreconditionFailed
from cloud_hub.events import EventBus
from cloud_hub.hub import Hub
from cloud_hub.models import DeviceRow
from cloud_hub.registry import Registry
from cloud_hub.twins import Twins, TwinWrite


@pytest.fixture
def api(hub: Hub) -> Iterator[TestClient]:
    token = hub.tokens.create(["admin"])
    with TestClient(create_app(hub=hub)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def _desired_events(hub: Hub) -> list[events.TwinDesiredChanged]:
    seen: list[events.TwinDesiredChanged] = []
    hub.events.subscribe(events.TwinDesiredChanged, seen.append)
    return seen


def test_a_failing_write_leaves_the_rest_of_its_batch_committed(hub: Hub) -> None:
    hub.registry.create_device("d1")
    hub.registry.create_device("d2")
    seen = _desired_events(hub)
    outcomes = hub.twins.write_batch(
        [
            TwinWrite("d1", None, None, {"a": 1}),
            TwinWrite("d2", None, None, {"b": 1}, if_match='"stale"'),
            TwinWrite("ghost", None, None, {"c": 1}),
            TwinWrite("d1", None, {"site": "x"}, {"a": 2}),  # sees the first write of the batch
            TwinWrite("d2", None, None, {f"k{i}": "x" * 4000 for i in range(9)}),  # > 32 KiB
        ]
    )
    first, stale, ghost, second, too_big = outcomes
    assert isinstance(first, dict) and first["properties"]["desired"]["$version"] == 2
    assert isinstance(stale, PreconditionFailed)
    assert isinstance(ghost, DeviceNotFound)
    assert isinstance(second, dict) and second["properties"]["desired"]["$version"] == 3
    assert second["tags"] == {"site": "x"} and second["version"] == 3
    assert isinstance(too_big, InvalidInput) and too_big.path == "properties.desired"
    stored = hub.twins.get_twin("d1")
    assert stored["properties"]["desired"]["a"] == 2 and stored["etag"] == second["etag"]
    untouched = hub.twins.get_twin("d2")
    assert untouched["version"] == 1 and "b" not in untouched["properties"]["desired"]
    assert [(e.device_id, e.version) for e in seen] == [("d1", 2), ("d1", 3)]


def test_a_database_error_retries_the_batch_one_write_at_a_time(hub: Hub) -> None:
    hub.registry.create_device("d1")
    seen = _desired_events(hub)
    # a NUL character in an id: PostgreSQL rejects the statement (aborting the transaction),
    # SQLite finds no such device
    outcomes = hub.twins.write_batch(
        [
            TwinWrite("d1", None, None, {"a": 1}),
            TwinWrite("a\x00b", None, None, {"a": 1}),
            TwinWrite("d1", None, None, {"a": 2}),
        ]
    )
    assert isinstance(outcomes[1], DataError | DeviceNotFound)
    assert [o["properties"]["desired"]["a"] for o in (outcomes[0], outcomes[2])] == [1, 2]  # type: ignore[index]
    assert hub.twins.get_twin("d1")["properties"]["desired"]["$version"] == 3
    assert [e.version for e in seen] == [2, 3]


def test_a_batch_of_module_and_device_twins_reads_back_as_answered(hub: Hub) -> None:
    for device_id in ("d1", "d2"):
        hub.registry.create_device(device_id)
        hub.registry.create_module(device_id, "m")
    seen = _desired_events(hub)
    etag_d2 = hub.twins.get_twin("d2", "m")["etag"]
    outcomes = hub.twins.write_batch(
        [
            TwinWrite("d2", "m", None, {"x": 1}, if_match=etag_d2),
            TwinWrite("d1", "m", {"role": "cam"}, None),  # tags only: other columns change
            TwinWrite("d1", "ghost", None, {"x": 1}),
            TwinWrite("d2", "m", None, {"x": 2}, if_match=etag_d2),  # stale after the first
            TwinWrite("d1", None, None, {"y": {"z": 1}}),
            TwinWrite("d1", "m", None, {"x": 3}),
            TwinWrite("d1", None, None, {"y": {"z": None, "w": 2}}),
        ]
    )
    assert isinstance(outcomes[2], ModuleNotFound)
    assert isinstance(outcomes[3], PreconditionFailed)
    answered = [o for o in outcomes if isinstance(o, dict)]
    assert len(answered) == 5
    latest: dict[tuple[str, str | None], dict[str, Any]] = {}
    for doc in answered:
        latest[(doc["deviceId"], doc.get("moduleId"))] = doc
    for (device_id, module_id), doc in latest.items():
        assert hub.twins.get_twin(device_id, module_id) == doc
    assert latest[("d1", "m")]["tags"] == {"role": "cam"}
    assert latest[("d1", "m")]["version"] == 3
    assert latest[("d1", None)]["properties"]["desired"]["y"] == {"w": 2}
    assert [(e.device_id, e.module_id, e.version) for e in seen] == [
        ("d2", "m", 2),
        ("d1", None, 2),
        ("d1", "m", 2),
        ("d1", None, 3),
    ]


def test_two_hub_processes_writing_the_same_twins_do_not_deadlock(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two writers (each with its own engine, as two hub processes) batch the same twins in
    opposite orders: the batches lock in key order, so none is rolled back by a deadlock."""
    first, second = Database(pg_url), Database(pg_url)
    first.migrate()
    twins = [Twins(first, EventBus()), Twins(second, EventBus())]
    device_ids = [f"dl-{i}" for i in range(8)]
    registry = Registry(first, EventBus())
    for device_id in device_ids:
        registry.create_device(device_id)
    rounds = 15
    failures: list[Any] = []

    def writer(index: int) -> None:
        order = device_ids if index == 0 else device_ids[::-1]
        for n in range(rounds):
            batch = [TwinWrite(d, None, None, {f"w{index}": n}) for d in order]
            failures.extend(o for o in twins[index].write_batch(batch) if not isinstance(o, dict))

    caplog.set_level(logging.INFO, logger="cloud_hub.twins")
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert failures == []
        assert not [r for r in caplog.records if "rolled back" in r.getMessage()]
        for device_id in device_ids:
            desired = twins[0].get_twin(device_id)["properties"]["desired"]
            assert desired["$version"] == 1 + 2 * rounds
            assert (desired["w0"], desired["w1"]) == (rounds - 1, rounds - 1)
    finally:
        with first.write_conn() as conn:
            conn.execute(delete(DeviceRow).where(DeviceRow.device_id.in_(device_ids)))
        first.dispose()
        second.dispose()


def test_concurrent_patches_over_http_all_apply_once(api: TestClient, hub: Hub) -> None:
    api.put("/devices/busy", json={})
    clients, patches = 8, 10
    versions: list[int] = []
    failures: list[str] = []

    def patcher(k: int) -> None:
        for i in range(patches):
            response = api.patch("/twins/busy", json={"properties": {"desired": {f"c{k}": i}}})
            if response.status_code != 200:
                failures.append(response.text)
                return
            versions.append(response.json()["properties"]["desired"]["$version"])

    threads = [threading.Thread(target=patcher, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    # every patch got its own $version, and the twin holds the last value of every client
    assert sorted(versions) == list(range(2, 2 + clients * patches))
    desired = api.get("/twins/busy").json()["properties"]["desired"]
    assert desired["$version"] == 1 + clients * patches
    assert {k: desired[f"c{k}"] for k in range(clients)} == dict.fromkeys(range(clients), 9)


def test_lean_twin_route_keeps_the_api_contract(api: TestClient, hub: Hub) -> None:
    api.put("/devices/d1", json={})
    no_token = api.get("/twins/d1", headers={"Authorization": ""})
    assert no_token.status_code == 401 and no_token.headers["www-authenticate"] == "Bearer"
    reader = hub.tokens.create(["registry:read"])
    as_reader = {"Authorization": f"Bearer {reader}"}
    assert api.get("/twins/d1", headers=as_reader).status_code == 200
    forbidden = api.patch("/twins/d1", json={"tags": {"a": 1}}, headers=as_reader)
    assert forbidden.status_code == 403 and forbidden.json()["errorCode"] == "Forbidden"
    broken = api.patch(
        "/twins/d1", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400 and broken.json()["path"] == "body:1"
    not_object = api.patch("/twins/d1", json=[1])
    assert not_object.status_code == 400 and not_object.json()["path"] == "body"
    # python's json reading: integers beyond 64 bits stay exact
    big: dict[str, Any] = api.patch("/twins/d1", json={"tags": {"n": 2**70}}).json()
    assert big["tags"]["n"] == 2**70
    etag = big["etag"]
    assert (
        api.patch("/twins/d1", json={"tags": {"n": 1}}, headers={"If-Match": '"no"'}).status_code
        == 412
    )
    ok = api.put("/twins/d1", json={"tags": {"only": True}}, headers={"If-Match": etag})
    assert ok.status_code == 200 and ok.json()["tags"] == {"only": True}
    assert api.post("/twins/d1", json={}).status_code == 405
    missing = api.patch("/twins/d1/modules/nope", json={"tags": {"a": 1}})
    assert missing.status_code == 404 and missing.json()["errorCode"] == "ModuleNotFound"


def test_lean_twin_route_refuses_an_oversized_body_and_keeps_the_twin(
    api: TestClient, hub: Hub
) -> None:
    api.put("/devices/big", json={})
    before = api.get("/twins/big").json()
    huge = b'{"tags": {"x": "' + b"a" * (2 * 1024 * 1024) + b'"}}'
    refused = api.patch("/twins/big", content=huge, headers={"content-type": "application/json"})
    assert refused.status_code == 413
    assert refused.json()["path"] == "body"
    after = api.get("/twins/big").json()
    assert after["tags"] == before["tags"] and after["version"] == before["version"]


def test_a_mounted_hub_serves_twins_through_the_same_handler(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a root path the front layer passes twin requests on; the router's twin route
    gives them to the same handler (group commit, same errors), and answers 405 and
    trailing-slash redirects as FastAPI routes do."""
    hub.registry.create_device("d1")
    committed: list[TwinWrite] = []
    write = hub.twin_commit.write

    async def spy(twin_write: TwinWrite) -> dict[str, Any]:
        committed.append(twin_write)
        return await write(twin_write)

    monkeypatch.setattr(hub.twin_commit, "write", spy)
    outer = FastAPI()
    outer.mount("/hub", create_app(hub=hub))
    token = hub.tokens.create(["admin"])
    with TestClient(outer) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        patched = client.patch("/hub/twins/d1", json={"tags": {"a": 1}})
        assert patched.status_code == 200 and patched.json()["tags"] == {"a": 1}
        assert [w.device_id for w in committed] == ["d1"]
        assert client.get("/hub/twins/d1").json()["tags"] == {"a": 1}
        assert client.get("/hub/twins/ghost").json()["errorCode"] == "DeviceNotFound"
        no_token = client.get("/hub/twins/d1", headers={"Authorization": ""})
        assert no_token.status_code == 401 and no_token.headers["www-authenticate"] == "Bearer"
        refused = client.delete("/hub/twins/d1")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, PATCH, PUT"
        slash = client.get("/hub/twins/d1/", follow_redirects=False)
        assert slash.status_code == 307 and slash.headers["location"].endswith("/hub/twins/d1")


def test_a_write_batch_on_sqlite_finds_its_twins_by_key_not_by_scanning_the_fleet(
    tmp_path: Path,
) -> None:
    """A batch's SELECT must not read every twin (at 100,000 devices a scan cost 21 ms of CPU
    per patch): every statement the batch runs is searched through an index."""
    from sqlalchemy import event

    from cloud_hub.hub import open_hub
    from cloud_hub.settings import HubSettings

    hub = open_hub(HubSettings(data_dir=tmp_path / "hub"))
    try:
        for i in range(50):
            hub.registry.create_device(f"d{i}")
        hub.registry.create_module("d7", "m")
        statements: list[tuple[str, Any]] = []

        def record(_conn: Any, _cursor: Any, sql: str, params: Any, *_rest: Any) -> None:
            if sql.lstrip().upper().startswith("SELECT"):
                statements.append((sql, params))

        event.listen(hub.db.engine, "before_cursor_execute", record)
        writes = [TwinWrite(f"d{i}", None, None, {"n": i}) for i in (3, 7, 41)]
        writes.append(TwinWrite("d7", "m", None, {"n": 0}))
        outcomes = hub.twins.write_batch(writes)
        event.remove(hub.db.engine, "before_cursor_execute", record)
        assert all(isinstance(o, dict) for o in outcomes)
        assert statements
        with hub.db.engine.connect() as conn:
            for sql, params in statements:
                plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()
                details = [row[-1] for row in plan]
                assert not [d for d in details if d.startswith("SCAN twins")], details
    finally:
        hub.close()
