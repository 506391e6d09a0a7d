"""A deployment written to an edge device's $edgeAgent twin creates its modules' identities."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cloud_hub.app import create_app
from cloud_hub.services import Hub


@pytest.fixture
def api(hub: Hub) -> Iterator[TestClient]:
    token = hub.tokens.create(["admin"])
    with TestClient(create_app(hub=hub)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def _deploy(api: TestClient, device: str, modules: dict[str, object]) -> None:
    response = api.patch(
        f"/twins/{device}/modules/$edgeAgent",
        json={"properties": {"desired": {"schemaVersion": "1.1", "modules": modules}}},
    )
    assert response.status_code == 200, response.text


def _module_ids(api: TestClient, device: str) -> dict[str, object]:
    listed = api.get(f"/devices/{device}/modules")
    assert listed.status_code == 200
    return {m["moduleId"]: m.get("managedBy") for m in listed.json()}


def test_deployment_creates_module_identities_and_twins(api: TestClient) -> None:
    api.put("/devices/cam1", json={"capabilities": {"iotEdge": True}})
    _deploy(api, "cam1", {"sensor": {"type": "process"}, "scoring": {"type": "process"}})

    modules = _module_ids(api, "cam1")
    assert modules["sensor"] == "iotEdge" and modules["scoring"] == "iotEdge"
    assert {"$edgeAgent", "$edgeHub"} <= set(modules)
    assert api.get("/twins/cam1/modules/scoring").status_code == 200
    key = api.get("/devices/cam1/modules/sensor").json()["authentication"]["symmetricKey"]
    assert key["primaryKey"] and key["secondaryKey"]


def test_redeploy_keeps_existing_identities_and_adds_new_ones(api: TestClient) -> None:
    api.put("/devices/cam2", json={"capabilities": {"iotEdge": True}})
    _deploy(api, "cam2", {"sensor": {}})
    first_key = api.get("/devices/cam2/modules/sensor").json()["authentication"]
    _deploy(api, "cam2", {"sensor": None, "camera": {}})

    modules = _module_ids(api, "cam2")
    assert "camera" in modules
    # dropped from the deployment, the identity stays (as in IoT Hub) with the same keys
    assert api.get("/devices/cam2/modules/sensor").json()["authentication"] == first_key


def test_a_bad_module_id_in_a_deployment_does_not_fail_the_twin_patch(api: TestClient) -> None:
    api.put("/devices/cam3", json={"capabilities": {"iotEdge": True}})
    too_long = "m" * 200  # a valid twin key, but not a valid module id
    _deploy(api, "cam3", {too_long: {}, "good": {}})
    modules = _module_ids(api, "cam3")
    assert "good" in modules and too_long not in modules
