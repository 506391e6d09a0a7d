"""IoT Hub configurations over REST, their assignment to devices and their metrics (both DBs)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cloud_hub.deployments import assigner
from cloud_hub.events import TwinDesiredChanged
from edgefleet.manifest import edge_deployment, process_module
from tests.deployments.conftest import Fleet


def base_content(**modules: str) -> dict[str, Any]:
    return edge_deployment({name: process_module(cmd) for name, cmd in modules.items()})


def layered_content(module: str, command: str, setting: int) -> dict[str, Any]:
    route = f"FROM /messages/modules/{module}/* INTO $upstream"
    return {
        "modulesContent": {
            "$edgeAgent": {f"properties.desired.modules.{module}": process_module(command)},
            "$edgeHub": {f"properties.desired.routes.{module}": route},
            module: {"properties.desired": {"setting": setting}},
        }
    }


def put(
    fleet: Fleet, cid: str, content: dict[str, Any], condition: str, priority: int, **extra: Any
) -> dict[str, Any]:
    body = {
        "id": cid,
        "content": content,
        "targetCondition": condition,
        "priority": priority,
        **extra,
    }
    reply = fleet.api.put(f"/configurations/{cid}", json=body)
    assert reply.status_code == 201, reply.text
    doc: dict[str, Any] = reply.json()
    return doc


def modules_of(fleet: Fleet, device: str) -> set[str]:
    return set(fleet.agent_twin(device)["properties"]["desired"].get("modules", {}))


def status(fleet: Fleet, device: str, cid: str) -> str | None:
    twin = fleet.api.get(f"/twins/{device}").json()
    value: str | None = twin.get("configurations", {}).get(cid, {}).get("status")
    return value


def query_ids(fleet: Fleet, text: str) -> set[str]:
    reply = fleet.api.post("/devices/query", json={"query": text})
    assert reply.status_code == 200, reply.text
    return {item["deviceId"] for item in reply.json()}


def test_crud_etags_and_immutable_content(fleet: Fleet) -> None:
    doc = put(
        fleet, "cams-v1", base_content(cam="cam"), "tags.plant='3'", 10, labels={"release": "v1"}
    )
    assert doc["id"] == "cams-v1" and doc["priority"] == 10 and doc["labels"] == {"release": "v1"}
    assert doc["systemMetrics"]["queries"]["appliedCount"].endswith(
        "configurations.[[cams-v1]].status = 'Applied'"
    )
    assert doc["createdTimeUtc"] and doc["etag"]
    again = fleet.api.put(
        "/configurations/cams-v1", json={"id": "cams-v1", "content": base_content(cam="cam")}
    )
    assert again.status_code == 409
    stale = fleet.api.put(
        "/configurations/cams-v1",
        json={**doc, "priority": 20},
        headers={"If-Match": '"not-it"'},
    )
    assert stale.status_code == 412
    updated = fleet.api.put(
        "/configurations/cams-v1", json={**doc, "priority": 20}, headers={"If-Match": doc["etag"]}
    )
    assert updated.status_code == 200 and updated.json()["priority"] == 20
    assert updated.json()["etag"] != doc["etag"]
    changed = copy.deepcopy(updated.json())
    changed["content"] = base_content(cam="other")
    refused = fleet.api.put("/configurations/cams-v1", json=changed, headers={"If-Match": "*"})
    assert refused.status_code == 400 and refused.json()["path"] == "content"
    put(fleet, "cams-v2", base_content(cam="cam2"), "", 1)
    listed = fleet.api.get("/configurations", params={"top": 1})
    assert [c["id"] for c in listed.json()] == ["cams-v1"]
    assert len(fleet.api.get("/configurations").json()) == 2
    assert (
        fleet.api.delete("/configurations/cams-v1", headers={"If-Match": '"x"'}).status_code == 412
    )
    assert fleet.api.delete("/configurations/cams-v1", headers={"If-Match": "*"}).status_code == 204
    assert fleet.api.get("/configurations/cams-v1").status_code == 404
    assert fleet.api.delete("/configurations/cams-v1").status_code == 404


def test_bad_bodies_get_400_with_the_json_path(fleet: Fleet) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("a", {"id": "b", "content": base_content(cam="c")}, "id"),
        (
            "a",
            {"content": base_content(cam="c"), "targetCondition": "tags.x = "},
            "targetCondition",
        ),
        ("a", {"content": {}}, "content"),
        (
            "a",
            {
                "content": {
                    **base_content(cam="c"),
                    "deviceContent": {"properties.desired.x": 1},
                }
            },
            "content",
        ),
        ("a", {"content": base_content(cam="c"), "priority": -1}, "priority"),
        ("a", {"content": base_content(cam="c"), "labels": {"k": 1}}, "labels.k"),
        (
            "a",
            {"content": base_content(cam="c"), "metrics": {"queries": {"m": "SELEC x"}}},
            "metrics.queries.m",
        ),
        ("a", {"content": base_content(cam="c"), "rollout": {"batches": []}}, "rollout.batches"),
        ("a", {"content": base_content(cam="c"), "surprise": 1}, "surprise"),
        ("UPPER", {"content": base_content(cam="c")}, "id"),
    ]
    for cid, body, path in cases:
        reply = fleet.api.put(f"/configurations/{cid}", json=body)
        assert reply.status_code == 400, (body, reply.text)
        assert reply.json()["path"].startswith(path), (body, reply.json())
    bad_module = base_content(cam="c")
    bad_module["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["cam"][
        "restartPolicy"
    ] = "sometimes"
    reply = fleet.api.put("/configurations/bad", json={"content": bad_module})
    assert reply.status_code == 400
    assert "modules.cam" in reply.json()["path"]
    assert fleet.api.get("/configurations").json() == []


def test_test_queries_answers_as_iot_hub(fleet: Fleet) -> None:
    good = fleet.api.post(
        "/configurations/testQueries",
        json={
            "targetCondition": "tags.plant='3'",
            "customMetricQueries": {"ok": "SELECT deviceId FROM devices"},
        },
    )
    assert good.json() == {"targetConditionError": "", "customMetricQueryErrors": {}}
    bad = fleet.api.post(
        "/configurations/testQueries",
        json={"targetCondition": "tags.plant = AND", "customMetricQueries": {"bad": "SELECT FROM"}},
    ).json()
    assert "column" in bad["targetConditionError"]
    assert (
        isinstance(bad["customMetricQueryErrors"]["bad"], str)
        and bad["customMetricQueryErrors"]["bad"]
    )


def test_priority_layers_statuses_and_metrics(fleet: Fleet) -> None:
    fleet.edge_device("p3-a", plant="3", role="camera")
    fleet.edge_device("p3-b", plant="3", role="sensor")
    fleet.edge_device("p4-a", plant="4", role="camera")
    put(fleet, "fleet-base", base_content(agent_base="x"), "tags.plant IN ['3', '4']", 1)
    put(fleet, "plant3", base_content(cam="cam3"), "tags.plant='3'", 10)
    put(
        fleet,
        "monitor",
        layered_content("mon", "mon", 5),
        "tags.role='camera'",
        20,
        metrics={"queries": {"cameras": "SELECT deviceId FROM devices WHERE tags.role = 'camera'"}},
    )
    put(fleet, "low-layer", layered_content("low", "low", 1), "tags.plant='3'", 5)
    fleet.settle()
    assert modules_of(fleet, "p3-a") == {"cam", "mon"}  # plant3 wins over fleet-base, + monitor
    assert modules_of(fleet, "p3-b") == {"cam"}  # low-layer (5) is below plant3 (10)
    assert modules_of(fleet, "p4-a") == {
        "agent_base",
        "mon",
    }  # monitor (20) is above fleet-base (1)
    assert fleet.api.get("/twins/p4-a/modules/mon").json()["properties"]["desired"]["setting"] == 5
    routes = fleet.api.get("/twins/p3-a/modules/$edgeHub").json()["properties"]["desired"]["routes"]
    assert set(routes) == {"up", "mon"}
    assert status(fleet, "p3-a", "plant3") == "Applied"
    assert status(fleet, "p3-a", "fleet-base") == "Targeted"
    assert status(fleet, "p3-b", "low-layer") == "Targeted"
    applied = (
        "SELECT deviceId FROM devices.modules WHERE configurations.[[monitor]].status = 'Applied'"
    )
    assert query_ids(fleet, applied) == {"p3-a", "p4-a"}
    # agents report: p3-a success, p4-a failure
    fleet.report("p3-a", 200)
    fleet.report("p4-a", 400)
    fleet.settle()
    monitor = fleet.api.get("/configurations/monitor").json()
    assert monitor["systemMetrics"]["results"] == {
        "targetedCount": 2,
        "appliedCount": 2,
        "reportedSuccessfulCount": 1,
        "reportedFailedCount": 1,
    }
    assert monitor["metrics"]["results"] == {"cameras": 2}
    # a device changes tags: it moves between deployments and its modules follow
    fleet.api.patch("/twins/p4-a", json={"tags": {"plant": "3"}})
    fleet.settle()
    assert modules_of(fleet, "p4-a") == {"cam", "mon"}
    assert status(fleet, "p4-a", "plant3") == "Applied"
    # deleting the higher base: plant 3 falls back to fleet-base
    assert fleet.api.delete("/configurations/plant3").status_code == 204
    fleet.settle()
    assert modules_of(fleet, "p3-b") == {"agent_base", "low"}  # low-layer (5) now above base (1)
    assert status(fleet, "p3-b", "plant3") is None
    history = fleet.api.get("/devices/p3-b/deployments").json()
    assert [h["configurations"][0]["id"] for h in history[:2]] == ["fleet-base", "plant3"]
    assert history[1]["endedTimeUtc"] and not history[0]["endedTimeUtc"]


def test_device_leaving_every_target_keeps_its_content(fleet: Fleet) -> None:
    fleet.edge_device("d1", plant="3")
    put(fleet, "plant3", base_content(cam="cam"), "tags.plant='3'", 1)
    fleet.settle()
    version = fleet.agent_twin("d1")["properties"]["desired"]["$version"]
    fleet.api.patch("/twins/d1", json={"tags": {"plant": "9"}})
    fleet.settle()
    assert modules_of(fleet, "d1") == {"cam"}
    assert fleet.agent_twin("d1")["properties"]["desired"]["$version"] == version
    assert status(fleet, "d1", "plant3") is None


def test_new_device_gets_its_deployment_and_assignment_writes_only_changes(fleet: Fleet) -> None:
    put(fleet, "all", base_content(cam="cam"), "", 1)
    fleet.edge_device("late")
    fleet.settle()
    assert modules_of(fleet, "late") == {"cam"}
    version = fleet.agent_twin("late")["properties"]["desired"]["$version"]
    fleet.worker.devices_changed({"late"})
    fleet.settle()
    assert fleet.agent_twin("late")["properties"]["desired"]["$version"] == version


def test_device_twin_configuration(fleet: Fleet) -> None:
    fleet.api.put("/devices/sensor-1", json={})
    fleet.api.patch("/twins/sensor-1", json={"tags": {"kind": "thermo"}})
    put(
        fleet,
        "thermo-rate",
        {"deviceContent": {"properties.desired.telemetry.interval": 30}},
        "tags.kind='thermo'",
        1,
    )
    fleet.settle()
    twin = fleet.api.get("/twins/sensor-1").json()
    assert twin["properties"]["desired"]["telemetry"] == {"interval": 30}
    assert twin["configurations"]["thermo-rate"]["status"] == "Applied"


def test_module_twin_configuration(fleet: Fleet) -> None:
    fleet.api.put("/devices/gw", json={})
    fleet.api.put("/devices/gw/modules/reader", json={})
    fleet.api.put("/devices/gw/modules/writer", json={})
    put(
        fleet,
        "reader-rate",
        {"moduleContent": {"properties.desired.poll.secs": 5}},
        "moduleId = 'reader'",
        1,
    )
    fleet.settle()
    reader = fleet.api.get("/twins/gw/modules/reader").json()
    assert reader["properties"]["desired"]["poll"] == {"secs": 5}
    assert reader["configurations"]["reader-rate"]["status"] == "Applied"
    writer = fleet.api.get("/twins/gw/modules/writer").json()
    assert "poll" not in writer["properties"]["desired"] and "configurations" not in writer
    fleet.settle()
    doc = fleet.api.get("/configurations/reader-rate").json()
    assert doc["systemMetrics"]["results"] == {"targetedCount": 1, "appliedCount": 1}
    assert fleet.api.delete("/configurations/reader-rate").status_code == 204
    fleet.settle()
    assert "configurations" not in fleet.api.get("/twins/gw/modules/reader").json()


def test_successes_reported_out_of_our_sight_are_found_in_the_stored_twins(fleet: Fleet) -> None:
    from cloud_hub.deployments.history import reconcile_successes

    fleet.edge_device("quiet", plant="3")
    put(fleet, "plant3", base_content(cam="cam"), "tags.plant='3'", 1)
    fleet.settle()
    fleet.report("quiet", 200)  # as if another hub process had received it
    assert reconcile_successes(fleet.hub.db) == 1
    (span,) = fleet.api.get("/devices/quiet/deployments").json()
    assert span["succeededTimeUtc"] is not None
    assert reconcile_successes(fleet.hub.db) == 0


def test_history_is_pruned_but_keeps_the_rollback_target(fleet: Fleet) -> None:
    from cloud_hub.deployments.history import prune_history

    fleet.edge_device("d", plant="3")
    put(fleet, "a", base_content(cam="a"), "tags.plant='3'", 1)
    fleet.settle()
    fleet.report("d", 200)  # "a" succeeded: the rollback target
    fleet.settle()
    put(fleet, "b", base_content(cam="b"), "tags.plant='3'", 2)
    fleet.settle()
    put(fleet, "c", base_content(cam="c"), "tags.plant='3'", 3)
    fleet.settle()
    ids = [
        [c["id"] for c in h["configurations"]]
        for h in fleet.api.get("/devices/d/deployments").json()
    ]
    assert ids == [["c"], ["b"], ["a"]]
    assert prune_history(fleet.hub.db, keep=1) == 1
    ids = [
        [c["id"] for c in h["configurations"]]
        for h in fleet.api.get("/devices/d/deployments").json()
    ]
    assert ids == [["c"], ["a"]]
    assert prune_history(fleet.hub.db, keep=1) == 0


def test_target_conditions_on_reported_properties_and_device_status(fleet: Fleet) -> None:
    # Conditions that read more than tags: the assignment reads the whole device twin.
    for device in ("r1", "r2", "r3"):
        fleet.edge_device(device, plant="3")
    fleet.hub.twins.patch_reported("r1", None, {"site": {"ready": True}})
    fleet.hub.twins.patch_reported("r2", None, {"site": {"ready": False}})
    put(fleet, "ready", base_content(cam="cam"), "properties.reported.site.ready = true", 5)
    put(fleet, "enabled", base_content(gw="gw"), "tags.plant = '3' AND status = 'enabled'", 1)
    fleet.settle()
    assert modules_of(fleet, "r1") == {"cam"}
    assert modules_of(fleet, "r2") == modules_of(fleet, "r3") == {"gw"}
    assert (status(fleet, "r1", "ready"), status(fleet, "r1", "enabled")) == ("Applied", "Targeted")
    fleet.hub.twins.patch_reported("r3", None, {"site": {"ready": True}})
    fleet.settle()
    assert modules_of(fleet, "r3") == {"cam"}


def test_a_fleet_assigned_in_many_batches_gets_each_device_once(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # batches of two: on PostgreSQL several batches are written side by side
    monkeypatch.setattr(assigner, "BATCH", 2)
    devices = [f"b{i}" for i in range(9)]
    for device in devices:
        fleet.edge_device(device, plant="7")
    pushed: list[tuple[str, str | None, int]] = []
    fleet.hub.events.subscribe(
        TwinDesiredChanged, lambda e: pushed.append((e.device_id, e.module_id, e.version))
    )
    put(fleet, "plant7", base_content(cam="cam7", mic="mic7"), "tags.plant='7'", 1)
    fleet.settle()
    for device in devices:
        assert modules_of(fleet, device) == {"cam", "mic"}
        assert status(fleet, device, "plant7") == "Applied"
        assert fleet.api.get(f"/devices/{device}/modules/cam").status_code == 200
        assert len(fleet.api.get(f"/devices/{device}/deployments").json()) == 1
    assert sorted(pushed) == sorted((d, m, 2) for d in devices for m in ("$edgeAgent", "$edgeHub"))
    metrics = fleet.api.get("/configurations/plant7").json()["systemMetrics"]["results"]
    assert metrics["appliedCount"] == metrics["targetedCount"] == len(devices)
    fleet.worker.devices_changed(set(devices))  # nothing left to write: no second push
    fleet.settle()
    assert len(pushed) == 2 * len(devices)
