"""Counting queries in SQL (``Queries.count``, ``Queries.device_ids``) gives what running them
gives, on real SQLite and PostgreSQL, including conditions only the evaluator answers."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from cloud_hub.hub import Hub
from cloud_hub.models import TwinRow
from cloud_hub.twin_query import Queries
from tests.hub.conftest import hub, pg_url  # noqa: F401  (the same database fixtures)

QUERIES = [
    "SELECT deviceId FROM devices WHERE capabilities.iotEdge = true AND (tags.plant = '3')",
    "SELECT deviceId FROM devices WHERE tags.plant IN ['3', '4'] OR deviceId = 'plain'",
    "SELECT deviceId FROM devices WHERE tags.plant = 3",  # a number: the evaluator decides
    "SELECT deviceId FROM devices WHERE tags.plant != '3'",
    "SELECT deviceId FROM devices WHERE tags.role = '{\"a\": 1}'",
    "SELECT deviceId FROM devices WHERE moduleId = ''",  # device twins show no moduleId
    "SELECT deviceId FROM devices.modules WHERE capabilities.iotEdge = true",  # nor modules this
    "SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent'",
    "SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' "
    "AND configurations.[[cams]].status = 'Applied'",
    "SELECT deviceId FROM devices WHERE configurations.[[cams]].status IN ['Applied', 'Targeted']",
    "SELECT TOP 2 deviceId FROM devices WHERE tags.plant = '3'",
    "SELECT * FROM devices",
    "SELECT deviceId FROM devices.modules",
    "SELECT COUNT() AS n FROM devices WHERE tags.plant = '3'",
    "SELECT deviceId FROM devices.jobs",
]


@pytest.fixture
def fleet(hub: Hub) -> Hub:  # noqa: F811
    registry, twins = hub.registry, hub.twins
    tags = {
        "e1": {"plant": "3", "role": "camera"},
        "e2": {"plant": "3", "role": {"a": 1}},
        "e3": {"plant": 3},
        "e4": {"plant": "4", "role": "sensor"},
        "plain": {"plant": "3"},
        "bare": {},
    }
    for device_id, device_tags in tags.items():
        body = {} if device_id == "plain" else {"capabilities": {"iotEdge": True}}
        registry.create_device(device_id, body)
        if device_tags:
            twins.patch_twin(device_id, None, {"tags": device_tags})
    registry.create_module("e1", "cam")
    applied = {"cams": {"status": "Applied"}}
    with hub.db.write_conn() as conn:
        for device_id, module_id in [("e1", ""), ("e1", "$edgeAgent"), ("e2", "$edgeAgent")]:
            conn.execute(
                update(TwinRow)
                .where(TwinRow.device_id == device_id, TwinRow.module_id == module_id)
                .values(configurations=applied)
            )
    return hub


@pytest.mark.parametrize("text", QUERIES)
def test_counts_and_device_ids_match_running_the_query(fleet: Hub, text: str) -> None:
    queries = Queries(fleet.db)
    results = queries.all(text)
    assert queries.count(text) == len(results)
    if "COUNT()" not in text and "TOP" not in text:
        assert queries.device_ids(text) == {r["deviceId"] for r in results if "deviceId" in r}


def test_the_fleet_is_what_the_queries_expect(fleet: Hub) -> None:
    queries = Queries(fleet.db)
    assert queries.count(QUERIES[0]) == 2  # e1, e2 (e3's plant is a number, plain is no edge)
    assert queries.count(QUERIES[5]) == 0 and queries.count(QUERIES[6]) == 0
    assert queries.count(QUERIES[8]) == 2
    assert queries.device_ids(QUERIES[1]) == {"e1", "e2", "e4", "plain"}
