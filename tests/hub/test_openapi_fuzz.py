"""Schemathesis over the hub's OpenAPI schema: any generated input gets a non-5xx answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from cloud_hub.app import create_app
from cloud_hub.hub import Hub, open_hub
from cloud_hub.settings import HubSettings
from tests.support.pg import temporary_database

_TOKEN: dict[str, str] = {}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_hub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hub]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    if request.param == "sqlite":
        hub = open_hub(HubSettings(data_dir=data_dir))
    else:
        database = temporary_database()
        url = database.__enter__()
        request.addfinalizer(lambda: database.__exit__(None, None, None))
        hub = open_hub(HubSettings(data_dir=data_dir, database_url=url))
    _TOKEN["admin"] = hub.tokens.create(["admin"])
    hub.registry.create_device("d1", {"capabilities": {"iotEdge": True}})
    hub.registry.create_module("d1", "m1")
    yield hub
    hub.close()


@pytest.fixture(scope="module")
def api_schema(fuzz_hub: Hub) -> Any:
    app = create_app(hub=fuzz_hub)
    app.state.ready = True
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_errors(case: Any) -> None:
    response = case.call(headers={"Authorization": f"Bearer {_TOKEN['admin']}"})
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400 and response.status_code not in (404, 405, 409, 412):
        body = response.json()
        assert body.get("message"), body


def test_schema_lists_iot_hub_paths(tmp_path: Path) -> None:
    hub = open_hub(HubSettings(data_dir=tmp_path))
    try:
        schema = create_app(hub=hub).openapi()
    finally:
        hub.close()
    paths = schema["paths"]
    for path in (
        "/devices",
        "/devices/{device_id}",
        "/devices/{device_id}/modules/{module_id}",
        "/twins/{device_id}",
        "/twins/{device_id}/modules/{module_id}",
        "/devices/query",
        "/health",
        "/configurations",
        "/configurations/{config_id}",
        "/configurations/testQueries",
        "/configurations/{config_id}/rollout/{action}",
        "/devices/{device_id}/deployments",
    ):
        assert path in paths

    # the twin routes are declared for their one handler with the shapes of a FastAPI route
    for path, names in (
        ("/twins/{device_id}", ["device_id"]),
        ("/twins/{device_id}/modules/{module_id}", ["device_id", "module_id"]),
    ):
        assert set(paths[path]) == {"get", "patch", "put"}
        for method, operation in paths[path].items():
            assert operation["security"] == [{"HTTPBearer": []}]
            header = [] if method == "get" else ["If-Match"]
            assert [p["name"] for p in operation["parameters"]] == names + header
            assert ("requestBody" in operation) == (method != "get")
            assert (
                operation["responses"]["200"]["content"]["application/json"]["schema"]["type"]
                == "object"
            )
    assert "HTTPValidationError" in schema["components"]["schemas"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
