"""Edge deployments: applyConfigurationContent, and module identities for deployed modules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

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


REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus" / "manifests"


def test_apply_configuration_content_sets_every_module_twin(api: TestClient) -> None:
    manifest = json.loads((REPO / "manifests" / "process-demo.json").read_text())
    api.put("/devices/edge1", json={"capabilities": {"iotEdge": True}})

    applied = api.post("/devices/edge1/applyConfigurationContent", json=manifest)
    assert applied.status_code == 204, applied.text

    agent = api.get("/twins/edge1/modules/$edgeAgent").json()["properties"]["desired"]
    wanted = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    assert agent["modules"].keys() == wanted["modules"].keys()
    for module in wanted["modules"]:
        assert api.get(f"/devices/edge1/modules/{module}").status_code == 200
    for module, section in manifest["modulesContent"].items():
        if module.startswith("$"):
            continue
        desired = api.get(f"/twins/edge1/modules/{module}").json()["properties"]["desired"]
        for key, value in section["properties.desired"].items():
            assert desired[key] == value


def test_apply_replaces_the_previous_deployment(api: TestClient) -> None:
    manifest = json.loads((REPO / "manifests" / "process-demo.json").read_text())
    api.put("/devices/edge2", json={"capabilities": {"iotEdge": True}})
    assert api.post("/devices/edge2/applyConfigurationContent", json=manifest).status_code == 204
    agent = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]
    first = sorted(agent["modules"])[0]
    agent["modules"] = {first: agent["modules"][first]}
    assert api.post("/devices/edge2/applyConfigurationContent", json=manifest).status_code == 204
    desired = api.get("/twins/edge2/modules/$edgeAgent").json()["properties"]["desired"]
    assert list(desired["modules"]) == [first]


def test_malformed_deployment_is_400_with_the_json_path(api: TestClient) -> None:
    malformed = next(CORPUS.glob("*malformed*.json"))
    api.put("/devices/edge3", json={"capabilities": {"iotEdge": True}})
    response = api.post(
        "/devices/edge3/applyConfigurationContent", json=json.loads(malformed.read_text())
    )
    assert response.status_code == 400
    assert response.json()["path"].startswith("modulesContent.$edgeAgent")
    # nothing was applied
    desired = api.get("/twins/edge3/modules/$edgeAgent").json()["properties"]["desired"]
    assert "modules" not in desired


def test_apply_to_a_plain_device_or_without_deploy_scope_is_refused(
    api: TestClient, hub: Hub
) -> None:
    manifest = json.loads((REPO / "manifests" / "process-demo.json").read_text())
    api.put("/devices/plain", json={})
    plain = api.post("/devices/plain/applyConfigurationContent", json=manifest)
    assert plain.status_code == 400 and plain.json()["path"] == "deviceId"
    missing = api.post("/devices/ghost/applyConfigurationContent", json=manifest)
    assert missing.status_code == 404

    api.put("/devices/edge4", json={"capabilities": {"iotEdge": True}})
    reader = hub.tokens.create(["registry:read"])
    refused = api.post(
        "/devices/edge4/applyConfigurationContent",
        json=manifest,
        headers={"Authorization": f"Bearer {reader}"},
    )
    assert refused.status_code == 403
