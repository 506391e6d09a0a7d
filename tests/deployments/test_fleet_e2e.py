"""Fleet deployments end to end: a real hub process (SQLite) and real agents (process runtime)
connected over MQTT. What the boxes run is read from the module processes themselves (each
module's command line carries a marker; its parent is the agent of its box)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.agent.test_hub_e2e import hub_agent, hub_reported, looping, wait_hub
from tests.deployments.test_configurations import base_content
from tests.support.agent import AgentProcess, procs_with
from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import wait_until

WAIT = 60.0


def module(marker: str) -> dict[str, Any]:
    """A process module that loops forever; ``marker`` names it on the command line."""
    return {**looping(marker), "status": "running", "restartPolicy": "always"}


def crashing(marker: str) -> dict[str, Any]:
    return {
        "type": "process",
        "status": "running",
        "restartPolicy": "always",
        "settings": {"command": ["sh", "-c", "exit 3", marker]},
    }


def content(modules: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A base deployment with these modules (and the usual system modules and routes)."""
    doc = base_content()
    doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"] = modules
    return doc


def http(hub: RunningHub, method: str, path: str, body: Any = None) -> Any:
    with hub.client() as client:
        reply = client.request(method, path, json=body)
        return reply.json() if reply.content else None


def put_configuration(
    hub: RunningHub, cid: str, content: dict[str, Any], condition: str, priority: int, **extra: Any
) -> None:
    body = {"id": cid, "content": content, "targetCondition": condition, "priority": priority}
    http(hub, "PUT", f"/configurations/{cid}", {**body, **extra})


def configuration(hub: RunningHub, cid: str) -> dict[str, Any]:
    doc: dict[str, Any] = http(hub, "GET", f"/configurations/{cid}")
    return doc


def history_ids(hub: RunningHub, device: str) -> list[list[str]]:
    """Newest first: the configurations of each deployment the device was given."""
    history = http(hub, "GET", f"/devices/{device}/deployments")
    return [[c["id"] for c in entry["configurations"]] for entry in history]


def history_modules(hub: RunningHub, device: str) -> set[str]:
    history = http(hub, "GET", f"/devices/{device}/deployments")
    return {name for entry in history for name in entry["modules"]}


def wait(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    assert wait_until(check, timeout=timeout, interval=0.2), f"timed out waiting for {what}"


def successful(hub: RunningHub, cid: str, count: int) -> Callable[[], bool]:
    """Whether the configuration's reportedSuccessfulCount metric is ``count``."""
    return lambda: (
        configuration(hub, cid)["systemMetrics"]["results"].get("reportedSuccessfulCount") == count
    )


def box_procs(agent: AgentProcess, marker: str) -> list[int]:
    """The processes with ``marker`` that this box's agent started."""
    assert agent.proc is not None
    out = []
    for pid in procs_with(marker):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == agent.proc.pid:
            out.append(pid)
    return out


@contextmanager
def edge_boxes(
    hub: RunningHub, workdir: Path, devices: dict[str, dict[str, str]]
) -> Iterator[dict[str, AgentProcess]]:
    """Register the devices with their tags and run one agent per device; stops them all."""
    agents: dict[str, AgentProcess] = {}
    try:
        for device, tags in devices.items():
            with hub.client() as client:
                client.create_device(device, {"capabilities": {"iotEdge": True}})
                client.patch_twin(device, {"tags": tags})
            agent = hub_agent(hub, workdir / device, device)
            agents[device] = agent
            agent.start()
        yield agents
    finally:
        for agent in agents.values():
            agent.stop()


def wait_running(hub: RunningHub, device: str, modules: set[str]) -> dict[str, Any]:
    """Until the device reported success on its current desired version, running ``modules``."""

    def done(rep: dict[str, Any]) -> bool:
        with hub.client() as client:
            desired = client.get_twin(device, "$edgeAgent")["properties"]["desired"]
        return (
            rep["lastDesiredVersion"] == desired["$version"]
            and rep["lastDesiredStatus"]["code"] == 200
            and set(rep["modules"]) == modules
            and all(m["runtimeStatus"] == "running" for m in rep["modules"].values())
        )

    return wait_hub(hub, device, f"{device} running {sorted(modules)}", done)


def wait_box(agent: AgentProcess, running: list[str], gone: list[str]) -> None:
    """Until the box runs one process per marker in ``running`` and none of ``gone``."""
    wait(
        f"{agent.device_id}: {running} running, {gone} gone",
        lambda: (
            all(len(box_procs(agent, m)) == 1 for m in running)
            and not any(box_procs(agent, m) for m in gone)
        ),
    )


# ---------------------------------------------------------------------- assignment


def test_layered_assignment_runs_on_real_boxes(tmp_path: Path) -> None:
    mark = {name: f"{tmp_path}/mod-{name}" for name in ("all", "plant3", "mon")}
    devices = {
        "p3-cam": {"plant": "3", "role": "camera"},
        "p3-sensor": {"plant": "3", "role": "sensor"},
        "p4-cam": {"plant": "4", "role": "camera"},
    }
    with running_hub(tmp_path) as hub, edge_boxes(hub, tmp_path, devices) as agents:
        put_configuration(hub, "base-all", content({"basic": module(mark["all"])}), "", 1)
        put_configuration(
            hub, "plant3", content({"cam": module(mark["plant3"])}), "tags.plant='3'", 10
        )
        monitor = {
            "modulesContent": {
                "$edgeAgent": {"properties.desired.modules.mon": module(mark["mon"])},
                "$edgeHub": {
                    "properties.desired.routes.mon": "FROM /messages/modules/mon/* INTO $upstream"
                },
                "mon": {"properties.desired": {"sampleRate": 5}},
            }
        }
        put_configuration(hub, "monitor", monitor, "tags.role='camera'", 20)
        expected = {"p3-cam": {"cam", "mon"}, "p3-sensor": {"cam"}, "p4-cam": {"basic", "mon"}}
        for device, names in expected.items():
            wait_running(hub, device, names)
        wait_box(agents["p3-cam"], [mark["plant3"], mark["mon"]], [mark["all"]])
        wait_box(agents["p3-sensor"], [mark["plant3"]], [mark["all"], mark["mon"]])
        wait_box(agents["p4-cam"], [mark["all"], mark["mon"]], [mark["plant3"]])

        with hub.client() as client:
            applied = client.query(
                "SELECT deviceId FROM devices.modules "
                "WHERE configurations.[[monitor]].status = 'Applied'"
            )
            assert {row["deviceId"] for row in applied} == {"p3-cam", "p4-cam"}
            for device in ("p3-cam", "p4-cam"):
                mon_twin = client.get_twin(device, "mon")
                assert mon_twin["properties"]["desired"]["sampleRate"] == 5
                routes = client.get_twin(device, "$edgeHub")["properties"]["desired"]["routes"]
                assert set(routes) == {"up", "mon"}
            assert (
                "mon"
                not in client.get_twin("p3-sensor", "$edgeHub")["properties"]["desired"]["routes"]
            )

        wait("monitor reportedSuccessfulCount 2", successful(hub, "monitor", 2))
        wait("plant3 reportedSuccessfulCount 2", successful(hub, "plant3", 2))
        wait("base-all reportedSuccessfulCount 1", successful(hub, "base-all", 1))
        results = configuration(hub, "monitor")["systemMetrics"]["results"]
        assert results["targetedCount"] == 2 and results["appliedCount"] == 2

        # p4-cam moves to plant 3: the base module goes, plant 3's comes, the layer stays
        mon_pid = box_procs(agents["p4-cam"], mark["mon"])
        with hub.client() as client:
            client.patch_twin("p4-cam", {"tags": {"plant": "3"}})
        wait_running(hub, "p4-cam", {"cam", "mon"})
        wait_box(agents["p4-cam"], [mark["plant3"], mark["mon"]], [mark["all"]])
        assert box_procs(agents["p4-cam"], mark["mon"]) == mon_pid  # untouched
        wait("plant3 reportedSuccessfulCount 3", successful(hub, "plant3", 3))
        # the other boxes did not move
        assert len(box_procs(agents["p3-sensor"], mark["plant3"])) == 1
        assert len(box_procs(agents["p3-cam"], mark["mon"])) == 1


# ---------------------------------------------------------------------- staged rollouts


@dataclass
class Fleet:
    """Four boxes of one plant running ``<plant>-v1`` (module ``app``) on the shared hub."""

    hub: RunningHub
    agents: dict[str, AgentProcess]
    plant: str
    workdir: Path

    def cid(self, version: str) -> str:
        return f"{self.plant}-{version}"

    def marker(self, name: str) -> str:
        return f"{self.workdir}/{name}"

    @property
    def condition(self) -> str:
        return f"tags.plant='{self.plant}'"

    def given(self, version: str) -> set[str]:
        """The devices whose deployment history names this version."""
        cid = self.cid(version)
        return {d for d in self.agents if any(cid in ids for ids in history_ids(self.hub, d))}

    def history(self, device: str) -> list[list[str]]:
        """Newest first, versions without the plant prefix."""
        cut = len(self.plant) + 1
        return [[c[cut:] for c in ids] for ids in history_ids(self.hub, device)]


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """One hub for the rollout tests (each has its own plant, devices and configurations)."""
    with running_hub(tmp_path_factory.mktemp("fleet-hub")) as hub:
        yield hub


@pytest.fixture
def fleet(shared_hub: RunningHub, tmp_path: Path) -> Iterator[Fleet]:
    plant = f"p{uuid.uuid4().hex[:6]}"
    devices = {f"{plant}-cam-{i}": {"plant": plant} for i in range(4)}
    with edge_boxes(shared_hub, tmp_path, devices) as agents:
        state = Fleet(shared_hub, agents, plant, tmp_path)
        v1 = state.marker("app-v1")
        put_configuration(
            shared_hub, state.cid("v1"), content({"app": module(v1)}), state.condition, 1
        )
        for device, agent in agents.items():
            wait_running(shared_hub, device, {"app"})
            wait_box(agent, [v1], [])
        yield state


def rollout(batches: list[str], min_healthy_secs: float, on_abort: str) -> dict[str, Any]:
    """A rollout aborting above 10 % failed devices once 3 are updated (or a batch decided)."""
    return {
        "batches": batches,
        "healthTimeoutSecs": 60,
        "minHealthySecs": min_healthy_secs,
        "abort": {"failedPercent": 10, "minDevices": 3},
        "onAbort": on_abort,
    }


def crashing_release(fleet: Fleet, on_abort: str) -> None:
    """v2: a new ``app`` plus a module that exits 3 at once, first to one device."""
    release = content(
        {"app": module(fleet.marker("app-v2")), "crashy": crashing(fleet.marker("crashy"))}
    )
    spec = rollout(["1", "100%"], 3, on_abort)
    put_configuration(fleet.hub, fleet.cid("v2"), release, fleet.condition, 2, rollout=spec)


def wait_rollout(
    hub: RunningHub, cid: str, states: set[str], timeout: float = 90
) -> dict[str, Any]:
    status: dict[str, Any] = {}

    def done() -> bool:
        nonlocal status
        status = configuration(hub, cid)["rolloutStatus"]
        return status["state"] in states

    assert wait_until(done, timeout=timeout, interval=0.3), f"rollout {cid}: {status}"
    return status


TERMINAL = {"rolledBack", "aborted", "completed"}


def test_crashing_release_rolls_back_after_the_first_device(fleet: Fleet) -> None:
    hub, agents = fleet.hub, fleet.agents
    v1, v2, crashy = fleet.marker("app-v1"), fleet.marker("app-v2"), fleet.marker("crashy")
    crashing_release(fleet, "rollback")
    status = wait_rollout(hub, fleet.cid("v2"), TERMINAL)
    assert status["state"] == "rolledBack", status
    assert status["updated"] == 1 and status["failed"] == 1
    (first,) = fleet.given("v2")
    assert first in status["reason"]
    assert fleet.history(first)[:3] == [["v1"], ["v2"], ["v1"]]
    # the others never saw v2: not in their history nor in their agent's desired modules
    for device in set(agents) - {first}:
        assert fleet.history(device) == [["v1"]]
        assert history_modules(hub, device) == {"app"}
    # the first box runs v1 again and nothing of v2 is left on it
    wait_running(hub, first, {"app"})
    wait_box(agents[first], [v1], [v2, crashy])
    assert procs_with(v2) == procs_with(crashy) == []
    for device, agent in agents.items():
        assert len(box_procs(agent, v1)) == 1, device
        assert "crashy" not in hub_reported(hub, device)["modules"]
    # the metrics agree: v1 applied and reported on all four, v2 on none
    wait("v1 reportedSuccessfulCount 4", successful(hub, fleet.cid("v1"), 4))
    assert configuration(hub, fleet.cid("v2"))["systemMetrics"]["results"]["appliedCount"] == 0


def test_crashing_release_halts_where_it_is(fleet: Fleet) -> None:
    hub, agents = fleet.hub, fleet.agents
    v1, v2 = fleet.marker("app-v1"), fleet.marker("app-v2")
    crashing_release(fleet, "halt")
    status = wait_rollout(hub, fleet.cid("v2"), TERMINAL)
    assert status["state"] == "aborted", status
    (first,) = fleet.given("v2")
    assert first in status["reason"]
    # the first box keeps v2: its app runs, the crashing module stays in its deployment
    assert fleet.history(first)[0] == ["v2"]
    with hub.client() as client:
        desired = client.get_twin(first, "$edgeAgent")["properties"]["desired"]
    assert set(desired["modules"]) == {"app", "crashy"}
    wait_box(agents[first], [v2], [v1])
    # later passes of the worker keep it halted; the others stay on v1
    time.sleep(2)
    assert configuration(hub, fleet.cid("v2"))["rolloutStatus"]["state"] == "aborted"
    assert fleet.given("v2") == {first}
    for device in set(agents) - {first}:
        assert fleet.history(device) == [["v1"]]
        assert len(box_procs(agents[device], v1)) == 1
        assert box_procs(agents[device], v2) == []


def test_healthy_release_completes_batch_by_batch(fleet: Fleet) -> None:
    hub, agents = fleet.hub, fleet.agents
    v1, v3 = fleet.marker("app-v1"), fleet.marker("app-v3")
    spec = rollout(["1", "50%", "100%"], 2, "rollback")
    v3_content = content({"app": module(v3)})
    put_configuration(hub, fleet.cid("v3"), v3_content, fleet.condition, 3, rollout=spec)
    seen: list[int] = []  # how many devices had v3, each time that changed

    def completed() -> bool:
        status = configuration(hub, fleet.cid("v3"))["rolloutStatus"]
        updated = status.get("updated", 0)  # absent until the worker starts the rollout
        if updated and (not seen or seen[-1] != updated):
            seen.append(updated)
        return bool(status["state"] == "completed")

    wait("v3 completed", completed, timeout=120)
    status = configuration(hub, fleet.cid("v3"))["rolloutStatus"]
    assert status["healthy"] == 4 and status["failed"] == 0 and status["pending"] == 0
    # one device, then half, then all (a stalled poll may miss the middle batch, never the first)
    assert seen[0] == 1 and seen[-1] == 4 and set(seen) <= {1, 2, 4}, seen
    assert seen == sorted(seen), seen
    for device, agent in agents.items():
        wait_running(hub, device, {"app"})
        wait_box(agent, [v3], [v1])
        assert fleet.history(device)[0] == ["v3"]
