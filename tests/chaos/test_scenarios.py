"""The chaos scenarios, short (2 s faults, 2 devices at 20 msg/s), one after the other on one
fleet of real processes in network namespaces: a hub with managed mosquitto and simulated devices
using the SDK. Each verdict judges everything stored since the start of the run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from composition.chaos.fleet import Fleet
from composition.chaos.netns import host_links, namespaces, owned
from composition.chaos.scenarios import Params, run_sequence

ORDER = [
    "partition",
    "partition-one-way",
    "hub-kill",
    "broker-restart",
    "slow-link",
    "lossy",
    "broker-kill",
]


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, dict[str, Any]]]:
    params = Params(seconds=2, devices=2, rate=20)
    fleet = Fleet(params.devices, params.rate)
    with fleet:
        fleet.start_load()
        outcomes = run_sequence(fleet, ORDER, params)
        yield {o["scenario"]: o for o in outcomes}
    prefix = fleet.topo.prefix
    assert owned(namespaces(), prefix) + owned(host_links(), prefix) == []
    assert not fleet.dir.exists()


def _clean(outcome: dict[str, Any]) -> None:
    assert outcome["expected"] > 0
    assert (outcome["lost"], outcome["duplicated"], outcome["reordered"]) == (0, 0, 0), outcome
    assert outcome["stored"] == outcome["expected"]
    assert outcome["recoverySeconds"] is not None
    assert outcome["passed"]


@pytest.mark.parametrize("name", ["partition", "partition-one-way"])
def test_a_partitioned_device_loses_nothing_and_keeps_order(
    results: dict[str, dict[str, Any]], name: str
) -> None:
    outcome = results[name]
    assert outcome["storedWhileCut"] == 0  # the fault really cut the device off
    _clean(outcome)


def test_a_killed_hub_loses_and_duplicates_nothing(results: dict[str, dict[str, Any]]) -> None:
    _clean(results["hub-kill"])


def test_a_gracefully_restarted_broker_loses_nothing(results: dict[str, dict[str, Any]]) -> None:
    assert results["broker-restart"]["brokerRestarts"] >= 1
    _clean(results["broker-restart"])


def test_loss_and_jitter_on_every_link_lose_nothing(results: dict[str, dict[str, Any]]) -> None:
    _clean(results["lossy"])


def test_through_loss_and_jitter_twin_patches_arrive_in_order_and_methods_never_hang(
    results: dict[str, dict[str, Any]],
) -> None:
    outcome = results["lossy"]
    twin, methods = outcome["twin"], outcome["methods"]
    assert twin["patches"] > 0 and twin["delivered"] > 0 and twin["outOfOrder"] == 0, twin
    for device in outcome["twinMethodsPerDevice"]:
        assert device["twin"]["lastArrived"], device  # the last patch reached every device
        assert device["methods"]["calls"] > 0, device
    assert methods["answered"] + methods["failed"] == methods["calls"] > 0, methods
    assert methods["overdue"] == 0, outcome["twinMethodsPerDevice"]  # none hung


def test_a_rate_limited_uplink_delays_but_loses_nothing(
    results: dict[str, dict[str, Any]],
) -> None:
    outcome = results["slow-link"]
    assert outcome["storedWhileLimited"] < outcome["acceptedWhileLimited"]  # the limit bit
    _clean(outcome)


def test_a_killed_broker_neither_duplicates_nor_reorders_and_delivery_resumes(
    results: dict[str, dict[str, Any]],
) -> None:
    outcome = results["broker-kill"]
    assert (outcome["duplicated"], outcome["reordered"]) == (0, 0)
    assert outcome["recoverySeconds"] is not None
    assert outcome["stored"] + outcome["lost"] == outcome["expected"]
    assert outcome["passed"]
