"""The scenarios with real edge agents (process runtime, edge hub, a load module deployed
through the hub), short, one after the other on one fleet of two devices whose agent data
directories are 32 MiB tmpfs mounts: disk-full, agent-kill, rollout-lossy, reboot-offline,
partition-cap (last: it leaves the store's cap on)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from composition.chaos import stall
from composition.chaos.netns import host_links, namespaces, owned
from composition.chaos.scenarios import SCENARIOS, Params, make_fleet, run_sequence

# a recovery that has not happened by then is reported (missing numbers, log tails) well
# before the test's own timeout ends the run
RECOVERY_TIMEOUT = 60.0
# the fleet and its five phases run in the first test's setup (about 3-4 minutes on 2 busy cores)
pytestmark = pytest.mark.timeout(480)
ORDER = ["disk-full", "agent-kill", "rollout-lossy", "reboot-offline", "partition-cap"]


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, dict[str, Any]]]:
    params = Params(seconds=2, devices=2, rate=20, recovery_timeout=RECOVERY_TIMEOUT)
    fleet = make_fleet(SCENARIOS["disk-full"], params)
    with fleet:
        fleet.start_load()
        outcomes = run_sequence(fleet, ORDER, params)
        yield {o["scenario"]: o for o in outcomes}
    prefix = fleet.topo.prefix
    assert owned(namespaces(), prefix) + owned(host_links(), prefix) == []
    assert fleet.dir.name not in open("/proc/mounts").read()  # the tmpfs mounts are gone


def _recovered(outcome: dict[str, Any]) -> None:
    """Every handed-over message was stored in time; otherwise which were not, and why."""
    stalls = outcome.get("recoveryTimeouts") or []
    why = "\n".join(stall.render(outcome["scenario"], s) for s in stalls) or str(outcome)
    assert outcome["recoverySeconds"] is not None and not stalls, why


def test_a_full_disk_keeps_the_agents_running_and_loses_nothing(
    results: dict[str, dict[str, Any]],
) -> None:
    outcome = results["disk-full"]
    _recovered(outcome)
    assert outcome["filledBytes"] > 0 and outcome["queuedBeforeFull"] > 0
    assert outcome["agentsAlive"] and outcome["conditionLogged"] == 2
    # restarted on the full disk, each agent reported storage "full", then "ok", at the hub
    assert outcome["reportedFullSeconds"] is not None and outcome["reportedOkSeconds"] is not None
    assert (outcome["lost"], outcome["duplicated"], outcome["reordered"]) == (0, 0, 0)
    assert outcome["stored"] == outcome["expected"] > 0
    assert outcome["passed"]


def test_an_agent_killed_mid_deployment_converges_without_orphans_or_duplicates(
    results: dict[str, dict[str, Any]],
) -> None:
    outcome = results["agent-kill"]
    _recovered(outcome)
    first, second = outcome["rounds"]
    for device, running in first["processes"].items():
        assert running == {"load": 1, "idle-0": 1, "idle-1": 1, "idle-2": 1}, (device, first)
    for device, running in second["processes"].items():
        assert running == {"load": 1}, (device, second)
    assert first["steady"] and second["steady"]
    assert (outcome["lost"], outcome["duplicated"], outcome["reordered"]) == (0, 0, 0)
    assert outcome["passed"]


def test_a_rollout_through_packet_loss_ends_by_its_rules_with_no_device_mixed(
    results: dict[str, dict[str, Any]],
) -> None:
    outcome = results["rollout-lossy"]
    _recovered(outcome)
    assert outcome["lossyDevices"] == 1 and outcome["lossPercent"] == 30
    assert outcome["rolloutState"] in ("completed", "rolledBack"), outcome
    final = {"completed": "v2", "rolledBack": "v1"}[outcome["rolloutState"]]
    for device, running in outcome["processes"].items():
        assert running == {"load": 1, final: 1}, (device, outcome["processes"])
    assert outcome["mixedDevices"] == []
    assert (outcome["lost"], outcome["duplicated"], outcome["reordered"]) == (0, 0, 0)
    assert outcome["passed"]


def test_a_device_rebooted_while_cut_off_runs_its_saved_deployment_and_loses_nothing(
    results: dict[str, dict[str, Any]],
) -> None:
    outcome = results["reboot-offline"]
    _recovered(outcome)
    # both agents started cold from their saved deployment, its modules once each, offline
    assert outcome["startedFromSaved"] == 2 and outcome["modulesBackSeconds"] is not None
    for device, running in outcome["processes"].items():
        assert running.get("load") == 1 and set(running.values()) == {1}, (device, running)
    assert outcome["acceptedWhileOffline"] > 0 and outcome["storedWhileOffline"] == 0
    assert (outcome["lost"], outcome["duplicated"], outcome["reordered"]) == (0, 0, 0)
    assert outcome["stored"] == outcome["expected"]
    assert outcome["passed"]


def test_a_capped_store_evicts_the_oldest_and_the_hub_and_checker_agree_on_the_count(
    results: dict[str, dict[str, Any]],
) -> None:
    outcome = results["partition-cap"]
    assert outcome["recoverySeconds"] is not None and outcome["storedWhileCut"] == 0
    evicted = outcome["evictedOnDevice"]
    assert evicted > 0  # the backlog really was larger than the cap
    # the device's own count reached the hub, and the checker finds exactly that many lost
    assert outcome["evictedReported"] == evicted == outcome["lost"] == outcome["expectedLoss"]
    for row in outcome["lossPerDevice"]:
        assert row["unaccounted"] == 0 and row["expectedLoss"] > 0, row
        assert row["lostRuns"] == 1, row  # one gap: the oldest stored at the time, in a row
    assert (outcome["duplicated"], outcome["reordered"]) == (0, 0)
    assert outcome["stored"] + outcome["lost"] == outcome["expected"]
    assert outcome["passed"]
