"""The dashboard's pure parts: filter queries, fleet rows, modules table, twin tree, sessions,
sign-in codes and the deployment creation form check."""

from __future__ import annotations

import json

from cloud_hub.ui.pages_deployments import check_form
from cloud_hub.ui.sessions import LoginCodes, SessionStore
from cloud_hub.ui.views import (
    editable_twin,
    fleet_query,
    fleet_row,
    mask,
    module_rows,
    short_time,
    twin_tree,
)
from edgefleet.manifest import edge_deployment, process_module


def test_filter_is_a_condition_or_a_whole_query_and_errors_point_into_the_box() -> None:
    assert fleet_query("") == ("SELECT * FROM devices", None)
    text, error = fleet_query("tags.site = 'a'")
    assert text == "SELECT * FROM devices WHERE tags.site = 'a'" and error is None
    assert fleet_query("SELECT * FROM devices WHERE status = 'enabled'")[1] is None
    _text, error = fleet_query("tags.site = ")
    assert error is not None and error.column == 12
    _text, error = fleet_query("tags.site = 'a' AND (")
    assert error is not None and error.column == 22
    _text, error = fleet_query("SELECT deviceId FROM devices")
    assert error is not None and "SELECT *" in error.message


def agent(desired_version: int, reported: dict[str, object]) -> dict[str, object]:
    return {"properties": {"desired": {"$version": desired_version}, "reported": reported}}


def test_fleet_row_reads_state_deployments_and_agent_answer() -> None:
    twin = {
        "deviceId": "cam-1",
        "connectionState": "Connected",
        "lastActivityTime": "2026-01-02T03:04:05Z",
        "capabilities": {"iotEdge": True},
        "tags": {"site": {"plant": "3"}, "role": "camera"},
        "configurations": {"b": {"status": "Targeted"}, "a": {"status": "Applied"}},
    }
    ok = {"lastDesiredVersion": 4, "lastDesiredStatus": {"code": 200}}
    row = fleet_row(twin, agent(4, ok))
    assert row.connected and row.edge
    assert row.tags == ["role=camera", "site.plant=3"]
    assert [(d.id, d.status) for d in row.deployments] == [("a", "Applied"), ("b", "Targeted")]
    assert row.agent_state == "ok"
    assert fleet_row(twin, agent(5, ok)).agent_state == "pending"
    failed = {"lastDesiredVersion": 4, "lastDesiredStatus": {"code": 400, "description": "bad"}}
    assert fleet_row(twin, agent(4, failed)).agent_state == "failed"
    crashed = {**ok, "modules": {"cam": {"runtimeStatus": "backoff"}, "x": {}}}
    assert fleet_row(twin, agent(4, crashed)).failed_modules == ["cam"]
    assert fleet_row({"deviceId": "s"}, None).agent_state == ""


def test_modules_table_as_iot_edge_reports_it() -> None:
    reported = {
        "systemModules": {"edgeHub": {"runtimeStatus": "running", "restartCount": 0}},
        "modules": {
            "cam": {
                "runtimeStatus": "failed",
                "exitCode": 137,
                "restartCount": 3,
                "lastStartTimeUtc": "2026-01-01T00:00:00Z",
                "lastExitTimeUtc": "2026-01-01T00:01:00Z",
                "settings": {"image": "reg/cam:2"},
                "version": "2.0",
            }
        },
    }
    job = {"type": "process", "settings": {"command": ["sh", "-c", "a b"]}}
    desired = {"modules": {"cam": {}, "job": job, "new": {"type": "process", "version": "1"}}}
    rows = module_rows(reported, desired)
    names = [(r.name, r.system) for r in rows]
    assert names == [("edgeHub", True), ("cam", False), ("job", False), ("new", False)]
    cam = rows[1]
    assert cam.failed and cam.exit_code == 137 and cam.restart_count == 3
    assert (cam.image, cam.version, cam.last_exit) == ("reg/cam:2", "2.0", "2026-01-01T00:01:00Z")
    assert rows[2].image == "sh -c 'a b'"  # a process module: its command line
    assert rows[3].runtime_status == "" and rows[3].image == "process"


def test_twin_tree_carries_metadata_times_and_editable_drops_bookkeeping() -> None:
    reported = {
        "fw": {"version": "1.2"},
        "$version": 7,
        "$metadata": {
            "$lastUpdated": "T0",
            "fw": {"$lastUpdated": "T1", "version": {"$lastUpdated": "T2"}},
        },
    }
    (node,) = twin_tree(reported)
    assert node.key == "fw" and node.updated == "T1"
    assert node.children is not None and node.children[0].updated == "T2"
    twin = {"tags": {"a": 1}, "properties": {"desired": {"x": 1, "$version": 3, "$metadata": {}}}}
    assert editable_twin(twin) == {"tags": {"a": 1}, "properties": {"desired": {"x": 1}}}
    assert short_time("2026-01-02T03:04:05.123456Z") == "2026-01-02 03:04:05Z"
    assert short_time(None) == "\u2014" and short_time("soon") == "soon"
    assert mask("abcdefgh").startswith("abcd") and "efgh" not in mask("abcdefgh")


def test_sessions_expire_when_idle_and_codes_work_once() -> None:
    now = [0.0]
    store = SessionStore(idle_seconds=60, clock=lambda: now[0])
    session = store.open("tok")
    assert session.csrf and session.id != session.csrf
    now[0] = 59
    assert store.get(session.id) is session  # use refreshes it
    now[0] = 118
    assert store.get(session.id) is session
    now[0] = 179
    assert store.get(session.id) is None
    assert store.get("nope") is None and store.get(None) is None
    small = SessionStore(max_sessions=2, clock=lambda: now[0])
    first = small.open("a")
    now[0] += 1
    small.open("b")
    small.open("c")
    assert len(small) == 2 and small.get(first.id) is None

    codes = LoginCodes(ttl_seconds=10, clock=lambda: now[0])
    code = codes.issue("tok")
    assert codes.redeem(code) == "tok"
    assert codes.redeem(code) is None
    late = codes.issue("tok")
    now[0] += 11
    assert codes.redeem(late) is None
    few = LoginCodes(max_codes=2, clock=lambda: now[0])
    oldest = few.issue("a")
    few.issue("b")
    few.issue("c")
    assert few.redeem(oldest) is None


def test_creation_form_problems_name_their_json_paths() -> None:
    broken = {"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "9"}}}}
    body, problems = check_form(
        {
            "id": "",
            "manifest": json.dumps(broken),
            "targetCondition": "tags.a = ",
            "priority": "x",
            "metrics": "m=SELECT",
            "rollout": '{"batches": []}',
        }
    )
    paths = {p.path for p in problems}
    assert body is None
    assert {"id", "targetCondition", "priority", "metrics.queries.m", "rollout"} <= paths
    assert "modulesContent.$edgeAgent.properties.desired.schemaVersion" in paths
    good = edge_deployment({"app": process_module("sleep 1")})
    body, problems = check_form(
        {
            "id": "d1",
            "manifest": json.dumps(good),
            "targetCondition": "tags.a = 'b'",
            "priority": "7",
            "labels": "release=v1",
        }
    )
    assert problems == [] and body is not None
    assert (body["id"], body["priority"], body["labels"]) == ("d1", 7, {"release": "v1"})
    _body, problems = check_form({"id": "d", "manifest": "a: [", "targetCondition": ""})
    assert problems and "neither JSON nor YAML" in problems[0].message


def test_every_dashboard_asset_ships_in_the_distribution() -> None:
    """Templates, scripts, styles and the vendored libraries are package data (the hub serves
    them from the installed package; nothing comes from a CDN)."""
    import fnmatch
    import tomllib
    from pathlib import Path

    import cloud_hub.ui

    root = Path(cloud_hub.ui.__file__).parent
    config = tomllib.loads((root.parents[1] / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["cloud_hub.ui"]
    assets = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.parts[-2] in ("templates", "static", "vendor")
    ]
    assert any(a.endswith("htmx.min.js") for a in assets)
    unshipped = [a for a in assets if not any(fnmatch.fnmatch(a, p) for p in patterns)]
    assert unshipped == []
    pages = " ".join(p.read_text() for p in (root / "templates").glob("*.html"))
    assert "http://" not in pages and "https://" not in pages
