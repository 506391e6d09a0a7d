"""Staged rollouts on the hub's services: batches, health, abort with rollback or halt, manual
control, and history as the rollback target (agents simulated by reported patches; the hub clock
is the test's)."""

from __future__ import annotations

from typing import Any

from tests.deployments.conftest import Fleet
from tests.deployments.test_configurations import base_content, modules_of, put, status

ROLLOUT = {
    "batches": ["1", "50%", "100%"],
    "healthTimeoutSecs": 300,
    "minHealthySecs": 30,
    "abort": {"failedPercent": 10, "minDevices": 3},
    "onAbort": "rollback",
}
DEVICES = [f"cam-{i}" for i in range(6)]


def running(*names: str, restarts: int = 0) -> dict[str, Any]:
    return {n: {"runtimeStatus": "running", "restartCount": restarts} for n in names}


def fleet_on_v1(fleet: Fleet) -> None:
    for device in DEVICES:
        fleet.edge_device(device, plant="3")
    put(fleet, "v1", base_content(cam="cam-v1"), "tags.plant='3'", 1)
    fleet.settle()
    for device in DEVICES:
        fleet.report(device, 200, running("cam"))
    fleet.settle()


def applied(fleet: Fleet, cid: str) -> set[str]:
    return {d for d in DEVICES if status(fleet, d, cid) == "Applied"}


def rollout_status(fleet: Fleet, cid: str) -> dict[str, Any]:
    doc: dict[str, Any] = fleet.api.get(f"/configurations/{cid}").json()["rolloutStatus"]
    return doc


def report_all(fleet: Fleet, devices: set[str], code: int, modules: dict[str, Any]) -> None:
    for device in sorted(devices):
        fleet.report(device, code, modules)
    fleet.settle()


def test_healthy_rollout_completes_batch_by_batch(fleet: Fleet) -> None:
    fleet_on_v1(fleet)
    put(fleet, "v2", base_content(cam="cam-v2"), "tags.plant='3'", 2, rollout=ROLLOUT)
    fleet.settle()
    first = applied(fleet, "v2")
    assert len(first) == 1
    others = set(DEVICES) - first
    assert all(status(fleet, d, "v2") == "Targeted" for d in others)
    assert all(modules_of(fleet, d) == {"cam"} for d in DEVICES)
    assert rollout_status(fleet, "v2")["state"] == "inProgress"
    report_all(fleet, first, 200, running("cam"))
    fleet.advance(10)
    fleet.settle()
    assert applied(fleet, "v2") == first  # healthy only after minHealthySecs
    fleet.advance(30)
    fleet.settle()
    second = applied(fleet, "v2")
    assert len(second) == 3 and first < second
    report_all(fleet, second - first, 200, running("cam"))
    fleet.advance(31)
    fleet.settle()
    assert len(applied(fleet, "v2")) == 6
    report_all(fleet, set(DEVICES) - second, 200, running("cam"))
    fleet.advance(31)
    fleet.settle()
    final = rollout_status(fleet, "v2")
    assert final["state"] == "completed" and final["healthy"] == 6 and final["failed"] == 0
    assert all(status(fleet, d, "v1") == "Targeted" for d in DEVICES)


def test_crashing_release_stops_at_the_first_batch_and_rolls_back(fleet: Fleet) -> None:
    fleet_on_v1(fleet)
    v1_agent = fleet.agent_twin(DEVICES[0])["properties"]["desired"]["modules"]["cam"]
    bad = base_content(cam="cam-v2", crashy="exit 1")
    put(fleet, "v2", bad, "tags.plant='3'", 2, rollout=ROLLOUT)
    fleet.settle()
    (first,) = applied(fleet, "v2")
    assert modules_of(fleet, first) == {"cam", "crashy"}
    modules = {**running("cam"), "crashy": {"runtimeStatus": "backoff", "restartCount": 3}}
    report_all(fleet, {first}, 200, modules)
    fleet.settle()
    state = rollout_status(fleet, "v2")
    assert state["state"] == "rolledBack" and first in state["reason"]
    # the device goes back to v1 (which targets it); later batches never saw v2
    assert modules_of(fleet, first) == {"cam"}
    for device in DEVICES:
        desired = fleet.agent_twin(device)["properties"]["desired"]
        assert desired["modules"]["cam"] == v1_agent
        assert status(fleet, device, "v1") == "Applied"
        history = fleet.api.get(f"/devices/{device}/deployments").json()
        ids = [[c["id"] for c in h["configurations"]] for h in history]
        assert ids == ([["v1"], ["v2"], ["v1"]] if device == first else [["v1"]])
    # rolled back stays out of assignment, even for a new device
    fleet.edge_device("cam-new", plant="3")
    fleet.settle()
    assert status(fleet, "cam-new", "v1") == "Applied"
    # until it is updated: then it rolls out afresh
    doc = fleet.api.get("/configurations/v2").json()
    reply = fleet.api.put(
        "/configurations/v2",
        json={**doc, "labels": {"retry": "1"}},
        headers={"If-Match": doc["etag"]},
    )
    assert reply.status_code == 200
    fleet.settle()
    assert rollout_status(fleet, "v2")["state"] == "inProgress"


def test_rollback_without_another_target_restores_the_last_successful_content(fleet: Fleet) -> None:
    fleet.edge_device("solo", plant="9")
    put(fleet, "solo-v1", base_content(cam="one"), "tags.plant='9'", 1)
    fleet.settle()
    fleet.report("solo", 200, running("cam"))
    fleet.settle()
    fleet.api.delete("/configurations/solo-v1")  # the device keeps solo-v1's content
    put(
        fleet,
        "solo-v2",
        base_content(cam="two", crashy="exit 1"),
        "tags.plant='9'",
        1,
        rollout=ROLLOUT,
    )
    fleet.settle()
    assert modules_of(fleet, "solo") == {"cam", "crashy"}
    fleet.report("solo", 400, {})
    fleet.settle()
    assert rollout_status(fleet, "solo-v2")["state"] == "rolledBack"
    desired = fleet.agent_twin("solo")["properties"]["desired"]
    assert set(desired["modules"]) == {"cam"}
    assert desired["modules"]["cam"]["settings"]["command"] == "one"


def test_halt_stops_where_it_is(fleet: Fleet) -> None:
    fleet_on_v1(fleet)
    put(
        fleet,
        "v2",
        base_content(cam="cam-v2"),
        "tags.plant='3'",
        2,
        rollout={**ROLLOUT, "onAbort": "halt"},
    )
    fleet.settle()
    (first,) = applied(fleet, "v2")
    fleet.report(first, 400, {})
    fleet.settle()
    assert rollout_status(fleet, "v2")["state"] == "aborted"
    assert applied(fleet, "v2") == {first}
    assert (
        fleet.agent_twin(first)["properties"]["desired"]["modules"]["cam"]["settings"]["command"]
        == "cam-v2"
    )


def test_offline_device_fails_after_the_health_timeout(fleet: Fleet) -> None:
    fleet_on_v1(fleet)
    put(fleet, "v2", base_content(cam="cam-v2"), "tags.plant='3'", 2, rollout=ROLLOUT)
    fleet.settle()
    fleet.advance(299)
    fleet.settle()
    assert rollout_status(fleet, "v2")["pending"] == 1
    fleet.advance(2)
    fleet.settle()
    state = rollout_status(fleet, "v2")
    assert state["state"] == "rolledBack" and "300" in state["reason"]


def test_pause_resume_abort_by_hand(fleet: Fleet) -> None:
    fleet_on_v1(fleet)
    put(fleet, "v2", base_content(cam="cam-v2"), "tags.plant='3'", 2, rollout=ROLLOUT)
    fleet.settle()
    (first,) = applied(fleet, "v2")
    paused = fleet.api.post("/configurations/v2/rollout/pause")
    assert paused.status_code == 200 and paused.json()["rolloutStatus"]["state"] == "paused"
    report_all(fleet, {first}, 200, running("cam"))
    fleet.advance(60)
    fleet.settle()
    assert applied(fleet, "v2") == {first}  # paused: no new batch
    assert (
        fleet.api.post("/configurations/v2/rollout/resume").json()["rolloutStatus"]["state"]
        == "inProgress"
    )
    fleet.settle()
    assert len(applied(fleet, "v2")) == 3
    aborted = fleet.api.post("/configurations/v2/rollout/abort")
    assert aborted.json()["rolloutStatus"]["state"] == "rolledBack"
    fleet.settle()
    assert applied(fleet, "v2") == set()
    assert fleet.api.post("/configurations/v2/rollout/resume").status_code == 400
    assert fleet.api.post("/configurations/v1/rollout/pause").status_code == 400
    assert fleet.api.post("/configurations/nope/rollout/pause").status_code == 404
    assert fleet.api.post("/configurations/v2/rollout/explode").status_code in (400, 422)


def test_a_put_without_rollout_keeps_it(fleet: Fleet) -> None:
    fleet_on_v1(fleet)
    doc = put(fleet, "v2", base_content(cam="cam-v2"), "tags.plant='3'", 2, rollout=ROLLOUT)
    body = {k: v for k, v in doc.items() if k not in ("rollout", "rolloutStatus")}
    reply = fleet.api.put(
        "/configurations/v2", json={**body, "priority": 3}, headers={"If-Match": doc["etag"]}
    )
    assert reply.status_code == 200
    assert reply.json()["rollout"]["batches"] == ["1", "50%", "100%"]
