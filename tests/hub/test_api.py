"""The REST API in-process (FastAPI TestClient) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cloud_hub.app import create_app
from cloud_hub.hub import Hub


@pytest.fixture
def api(hub: Hub) -> Iterator[TestClient]:
    token = hub.tokens.create(["admin"])
    with TestClient(create_app(hub=hub)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def test_device_lifecycle_over_http(api: TestClient) -> None:
    created = api.put(
        "/devices/cam-1?api-version=2021-04-12",
        json={"deviceId": "cam-1", "capabilities": {"iotEdge": True}},
    )
    assert created.status_code == 200
    device = created.json()
    assert device["capabilities"]["iotEdge"] is True
    assert api.put("/devices/cam-1", json={}).status_code == 409
    stale = api.put("/devices/cam-1", json={"status": "disabled"}, headers={"If-Match": '"x"'})
    assert stale.status_code == 412
    ok = api.put(
        "/devices/cam-1", json={"status": "disabled"}, headers={"If-Match": f'"{device["etag"]}"'}
    )
    assert ok.status_code == 200 and ok.json()["status"] == "disabled"
    modules = api.get("/devices/cam-1/modules").json()
    assert [m["moduleId"] for m in modules] == ["$edgeAgent", "$edgeHub"]
    assert api.put("/devices/cam-1/modules/scorer", json={}).status_code == 200
    assert api.get("/devices/cam-1/modules/scorer").json()["moduleId"] == "scorer"
    assert api.delete("/devices/cam-1/modules/scorer").status_code == 204
    assert api.get("/devices/cam-1/modules/scorer").status_code == 404
    assert api.delete("/devices/cam-1", headers={"If-Match": '"old"'}).status_code == 412
    assert api.delete("/devices/cam-1").status_code == 204
    missing = api.get("/devices/cam-1")
    assert missing.status_code == 404 and missing.json()["errorCode"] == "DeviceNotFound"


def test_device_paging_with_continuation_header(api: TestClient) -> None:
    for i in range(5):
        api.put(f"/devices/d{i}", json={})
    first = api.get("/devices", params={"top": 2})
    assert [d["deviceId"] for d in first.json()] == ["d0", "d1"]
    token = first.headers["x-ms-continuation"]
    second = api.get("/devices", params={"top": 2}, headers={"x-ms-continuation": token})
    assert [d["deviceId"] for d in second.json()] == ["d2", "d3"]
    assert api.get("/devices", params={"top": 0}).status_code == 400


def test_twins_over_http(api: TestClient) -> None:
    api.put("/devices/d1", json={"capabilities": {"iotEdge": True}})
    patched = api.patch(
        "/twins/d1", json={"tags": {"env": "prod"}, "properties": {"desired": {"fps": 5}}}
    )
    assert patched.status_code == 200
    twin = patched.json()
    assert twin["tags"] == {"env": "prod"} and twin["properties"]["desired"]["fps"] == 5
    stale = api.patch("/twins/d1", json={"tags": {"a": 1}}, headers={"If-Match": '"AAAA"'})
    assert stale.status_code == 412
    good = api.patch("/twins/d1", json={"tags": {"a": 1}}, headers={"If-Match": twin["etag"]})
    assert good.status_code == 200
    replaced = api.put("/twins/d1", json={"tags": {"only": True}})
    assert replaced.json()["tags"] == {"only": True}
    assert replaced.json()["properties"]["desired"]["$version"] == 3
    module = api.patch(
        "/twins/d1/modules/$edgeAgent", json={"properties": {"desired": {"schemaVersion": "1.1"}}}
    )
    assert module.status_code == 200 and module.json()["moduleId"] == "$edgeAgent"
    assert api.get("/twins/d1/modules/$edgeHub").status_code == 200
    assert api.get("/twins/ghost").status_code == 404


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "path"),
    [
        ("put", "/devices/d9", {"json": {"status": "sleeping"}}, "status"),
        ("put", "/devices/d9", {"json": [1, 2]}, "body"),
        (
            "put",
            "/devices/d9",
            {"content": b"{not json", "headers": {"content-type": "a/json"}},
            "",
        ),
        ("put", "/devices/d9", {"json": {"capabilities": {"iotEdge": "maybe"}}}, "capabilities"),
        ("patch", "/twins/d1", {"json": {"tags": {"a b": 1}}}, "tags.a b"),
        ("patch", "/twins/d1", {"json": {"properties": {"desired": 3}}}, "properties.desired"),
        ("post", "/devices/query", {"json": {"query": "SELECT * FROM"}}, "query"),
        ("post", "/devices/query", {"json": {"nope": 1}}, "query"),
        ("get", "/devices?top=abc", {}, "query:top"),
    ],
)
def test_bad_input_is_4xx_naming_the_field(
    api: TestClient, method: str, url: str, kwargs: dict[str, object], path: str
) -> None:
    api.put("/devices/d1", json={})
    response = getattr(api, method)(url, **kwargs)
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert body["message"]
    if path:
        assert body["path"].startswith(path), body


def test_auth_scopes(hub: Hub) -> None:
    reader = hub.tokens.create(["registry:read"])
    deployer = hub.tokens.create(["deploy"])
    with TestClient(create_app(hub=hub)) as client:
        assert client.get("/devices").status_code == 401
        assert client.get("/health").status_code == 200
        as_reader = {"Authorization": f"Bearer {reader}"}
        assert client.get("/devices", headers=as_reader).status_code == 200
        assert client.put("/devices/x", json={}, headers=as_reader).status_code == 403
        as_deployer = {"Authorization": f"Bearer {deployer}"}
        assert client.get("/devices", headers=as_deployer).status_code == 403
        wrong_scheme = {"Authorization": f"Basic {reader}"}
        assert client.get("/devices", headers=wrong_scheme).status_code == 401


def test_query_endpoint_with_paging(api: TestClient) -> None:
    for i in range(12):
        api.put(f"/devices/d{i:02}", json={"capabilities": {"iotEdge": i % 4 == 0}})
        api.patch(
            f"/twins/d{i:02}",
            json={"tags": {"region": "west" if i % 2 else "east", "rank": i}},
        )
    query = {"query": "SELECT * FROM devices WHERE tags.region = 'west' AND tags.rank >= 3"}
    ids: list[str] = []
    headers = {"x-ms-max-item-count": "2"}
    pages = 0
    while True:
        response = api.post("/devices/query", json=query, headers=headers)
        assert response.status_code == 200
        assert response.headers["x-ms-item-type"] == "Twin"
        ids += [t["deviceId"] for t in response.json()]
        pages += 1
        token = response.headers.get("x-ms-continuation")
        if not token:
            break
        headers = {"x-ms-max-item-count": "2", "x-ms-continuation": token}
    assert ids == ["d03", "d05", "d07", "d09", "d11"]
    assert pages >= 3

    grouped = api.post(
        "/devices/query",
        json={"query": "SELECT tags.region, COUNT() AS n FROM devices GROUP BY tags.region"},
    ).json()
    assert sorted((g["region"], g["n"]) for g in grouped) == [("east", 6), ("west", 6)]
    modules = api.post(
        "/devices/query",
        json={
            "query": "SELECT deviceId, moduleId FROM devices.modules WHERE moduleId = '$edgeHub'"
        },
    ).json()
    assert modules == [{"deviceId": f"d{i:02}", "moduleId": "$edgeHub"} for i in (0, 4, 8)]
    top = api.post("/devices/query", json={"query": "SELECT TOP 2 deviceId FROM devices"}).json()
    assert top == [{"deviceId": "d00"}, {"deviceId": "d01"}]
    bad = api.post("/devices/query", json={"query": "SELECT * FROM devices WHERE tags.x = "})
    assert bad.status_code == 400 and "column" in bad.json()["message"]
    other = api.post(
        "/devices/query",
        json={"query": "SELECT * FROM devices"},
        headers={"x-ms-continuation": token or "eyJxIjoiMSJ9"},
    )
    assert other.status_code == 400


def test_nul_characters_are_rejected_not_crashing(api: TestClient) -> None:
    api.put("/devices/d1", json={})
    assert api.get("/devices/a%00b").status_code in (400, 404)
    assert api.get("/twins/a%00b").status_code in (400, 404)
    assert api.put("/devices/a%00b", json={}).status_code == 400
    bad = api.patch("/twins/d1", json={"tags": {"a": "x\u0000y"}})
    assert bad.status_code == 400 and bad.json()["path"] == "tags.a"


def test_query_on_twin_version_and_reported(api: TestClient, hub: Hub) -> None:
    api.put("/devices/a", json={})
    api.put("/devices/b", json={})
    for _ in range(3):
        api.patch("/twins/b", json={"properties": {"desired": {"x": 1}}})
    hub.twins.patch_reported("a", None, {"fw": "2.0"})
    rows = api.post(
        "/devices/query",
        json={"query": "SELECT deviceId, $version AS v FROM devices WHERE $version > 2"},
    ).json()
    assert rows == [{"deviceId": "b", "v": 4}]
    reported = api.post(
        "/devices/query",
        json={"query": "SELECT * FROM devices WHERE properties.reported.fw = '2.0'"},
    ).json()
    assert [t["deviceId"] for t in reported] == ["a"]
    assert "$version" not in reported[0]


def test_bulk_import_modes_and_per_item_errors(api: TestClient) -> None:
    api.put("/devices/old", json={})
    api.put("/devices/gone", json={})
    items = [
        {"id": "n1", "importMode": "create", "tags": {"site": "a"}},
        {"id": "n2", "tags": {"site": "b"}, "properties": {"desired": {"fps": 3}}},
        {"id": "old", "importMode": "createOrUpdate", "status": "disabled"},
        {"id": "gone", "importMode": "delete"},
        {"id": "n1", "importMode": "update", "tags": {"site": "c"}},
    ]
    result = api.post("/devices", json=items)
    assert result.status_code == 200, result.text
    assert result.json() == {"isSuccessful": True, "errors": [], "warnings": []}
    assert api.get("/twins/n1").json()["tags"] == {"site": "c"}
    n2 = api.get("/twins/n2").json()
    assert n2["tags"] == {"site": "b"} and n2["properties"]["desired"]["fps"] == 3
    assert api.get("/devices/old").json()["status"] == "disabled"
    assert api.get("/devices/gone").status_code == 404

    bad = api.post(
        "/devices",
        json=[
            {"id": "ok-1"},
            {"id": "old", "importMode": "create"},
            {"id": "bad key", "importMode": "create"},
            {"id": "k", "authentication": {"symmetricKey": {"primaryKey": "short"}}},
            {"id": "m", "importMode": "sideways"},
            {"nope": 1},
        ],
    )
    assert bad.status_code == 400
    body = bad.json()
    assert body["isSuccessful"] is False and body["message"].startswith("5 of 6 items failed")
    paths = sorted(e["path"] for e in body["errors"])
    assert paths == [
        "[1].deviceId",
        "[2].deviceId",
        "[3].authentication.symmetricKey.primaryKey",
        "[4].importMode",
        "[5].id",
    ]
    assert api.get("/devices/ok-1").status_code == 200  # the good item still went in
    assert api.post("/devices", json={"id": "x"}).status_code == 400


def test_rotate_key_over_http(api: TestClient) -> None:
    device = api.put("/devices/cam-1", json={}).json()
    before = device["authentication"]["symmetricKey"]
    swapped = api.post("/devices/cam-1/rotateKey", params={"which": "swap"})
    assert swapped.status_code == 200
    keys = swapped.json()["authentication"]["symmetricKey"]
    assert keys == {"primaryKey": before["secondaryKey"], "secondaryKey": before["primaryKey"]}
    assert swapped.json()["etag"] != device["etag"]
    fresh = api.post("/devices/cam-1/rotateKey").json()["authentication"]["symmetricKey"]
    assert fresh["secondaryKey"] == keys["secondaryKey"]
    assert fresh["primaryKey"] not in (keys["primaryKey"], keys["secondaryKey"])

    api.put("/devices/cam-1/modules/scorer", json={})
    module = api.get("/devices/cam-1/modules/scorer").json()["authentication"]["symmetricKey"]
    rotated = api.post("/devices/cam-1/modules/scorer/rotateKey", params={"which": "secondary"})
    assert rotated.status_code == 200
    after = rotated.json()["authentication"]["symmetricKey"]
    assert after["primaryKey"] == module["primaryKey"]
    assert after["secondaryKey"] != module["secondaryKey"]

    bad = api.post("/devices/cam-1/rotateKey", params={"which": "tertiary"})
    assert bad.status_code == 400 and "which" in bad.text
    assert api.post("/devices/nobody/rotateKey").status_code == 404
    assert api.post("/devices/cam-1/modules/nobody/rotateKey").status_code == 404
