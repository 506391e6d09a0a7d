"""Fixtures of the deployment tests: the REST API in-process on SQLite and PostgreSQL, with the
deployment worker driven by hand (``Fleet.settle()``) on a clock the test controls."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud_hub.app import create_app
from cloud_hub.deployments.worker import DeploymentWorker
from cloud_hub.hub import Hub
from tests.hub.conftest import hub, pg_url  # noqa: F401  (the same database fixtures)


@dataclass
class Fleet:
    hub: Hub
    api: TestClient
    worker: DeploymentWorker
    now: float = 1_000_000.0

    def settle(self, passes: int = 3) -> None:
        """Run the worker's passes (assignment, rollouts, metrics) until nothing is left."""
        for _ in range(passes):
            self.worker.run_once(metrics_now=True)

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def edge_device(self, device_id: str, **tags: Any) -> None:
        assert (
            self.api.put(
                f"/devices/{device_id}", json={"capabilities": {"iotEdge": True}}
            ).status_code
            == 200
        )
        if tags:
            assert self.api.patch(f"/twins/{device_id}", json={"tags": tags}).status_code == 200

    def agent_twin(self, device_id: str) -> dict[str, Any]:
        twin: dict[str, Any] = self.api.get(f"/twins/{device_id}/modules/$edgeAgent").json()
        return twin

    def report(
        self, device_id: str, code: int = 200, modules: dict[str, Any] | None = None
    ) -> None:
        """What an agent reports after applying its current desired version."""
        desired = self.agent_twin(device_id)["properties"]["desired"]
        patch = {
            "lastDesiredVersion": desired["$version"],
            "lastDesiredStatus": {"code": code},
            "modules": modules or {},
        }
        self.hub.twins.patch_reported(device_id, "$edgeAgent", patch)


@pytest.fixture
def fleet(hub: Hub) -> Iterator[Fleet]:  # noqa: F811
    token = hub.tokens.create(["admin"])
    app = create_app(hub=hub)  # lifespan not run: no broker, no worker thread
    client = TestClient(app)
    client.headers["Authorization"] = f"Bearer {token}"
    worker: DeploymentWorker = hub.extensions["deployments"]
    state = Fleet(hub, client, worker)
    worker.subscribe()
    worker.stepper.clock = lambda: state.now
    yield state
    client.close()
