"""Fleet deployments under faults, against real hub processes: a hub killed mid-rollout, an
agent offline when its batch activates, two hubs on one PostgreSQL database, and malformed
configuration bodies over HTTP. Simulated agents write ``$edgeAgent`` reported properties
through a service object on the hub's database (another process, as a device's reports would
arrive through another hub)."""

from __future__ import annotations

import copy
import hashlib
import json
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from cloud_hub.hub import Hub, open_hub
from cloud_hub.models import TwinRow
from cloud_hub.settings import HubSettings
from tests.deployments.test_configurations import base_content
from tests.support.agent import AgentProcess
from tests.support.hub import RunningHub, running_hub
from tests.support.pg import temporary_database

EDGE_AGENT = "$edgeAgent"


# ---------------------------------------------------------------------- helpers
def rest(hub: RunningHub) -> httpx.Client:
    return httpx.Client(
        base_url=hub.url, headers={"Authorization": f"Bearer {hub.token}"}, timeout=30
    )


def edge_devices(hub: RunningHub, devices: Iterable[str], **tags: str) -> None:
    with rest(hub) as api:
        for device in devices:
            reply = api.put(f"/devices/{device}", json={"capabilities": {"iotEdge": True}})
            assert reply.status_code == 200, reply.text
            if tags:
                assert api.patch(f"/twins/{device}", json={"tags": tags}).status_code == 200


def put_configuration(
    hub: RunningHub, cid: str, priority: int, command: str = "sleep 3600", **extra: Any
) -> None:
    body = {
        "id": cid,
        "content": base_content(cam=command),
        "targetCondition": "tags.fleet='faults'",
        "priority": priority,
        **extra,
    }
    with rest(hub) as api:
        reply = api.put(f"/configurations/{cid}", json=body)
    assert reply.status_code == 201, reply.text


def rollout_status(hub: RunningHub, cid: str) -> dict[str, Any]:
    with rest(hub) as api:
        reply = api.get(f"/configurations/{cid}")
    assert reply.status_code == 200, reply.text
    status: dict[str, Any] = reply.json().get("rolloutStatus") or {}
    return status


def history(hub: RunningHub, device: str) -> list[dict[str, Any]]:
    with rest(hub) as api:
        reply = api.get(f"/devices/{device}/deployments")
    assert reply.status_code == 200, reply.text
    rows: list[dict[str, Any]] = reply.json()
    return rows


def rows_for(hub: RunningHub, device: str, cid: str) -> int:
    return sum(1 for row in history(hub, device) if cid in {c["id"] for c in row["configurations"]})


def eventually(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def first_in_order(devices: Iterable[str]) -> str:
    """The device a rollout activates first (ordered by the sha256 of its id)."""
    return min(devices, key=lambda d: hashlib.sha256(d.encode()).hexdigest())


@contextmanager
def service(data_dir: Path, database_url: str | None = None) -> Iterator[Hub]:
    hub = open_hub(HubSettings(data_dir=data_dir, database_url=database_url))
    try:
        yield hub
    finally:
        hub.close()


def applied(svc: Hub, devices: Iterable[str], cid: str) -> set[str]:
    """The devices whose $edgeAgent twin says ``cid`` is Applied, read in one statement so that a
    batch written in one transaction is seen whole."""
    wanted = list(devices)
    with svc.db.engine.connect() as conn:
        rows = conn.execute(
            select(TwinRow.device_id, TwinRow.configurations).where(
                TwinRow.module_id == EDGE_AGENT, TwinRow.device_id.in_(wanted)
            )
        ).all()
    return {
        device
        for device, configurations in rows
        if (configurations or {}).get(cid, {}).get("status") == "Applied"
    }


def report_healthy(svc: Hub, device: str) -> bool:
    """Report success on the current desired version, as an agent would; False when done."""
    twin = svc.twins.get_twin(device, EDGE_AGENT)
    version = twin["properties"]["desired"]["$version"]
    if twin["properties"]["reported"].get("lastDesiredVersion") == version:
        return False
    modules = {
        name: {"runtimeStatus": "running", "restartCount": 0}
        for name in twin["properties"]["desired"].get("modules", {})
    }
    patch = {
        "lastDesiredVersion": version,
        "lastDesiredStatus": {"code": 200},
        "modules": modules,
    }
    svc.twins.patch_reported(device, EDGE_AGENT, patch)
    return True


def kill9(hub: RunningHub) -> None:
    hub.process.send_signal(signal.SIGKILL)
    hub.process.wait(10)


# ---------------------------------------------------------------------- 1. hub kill -9
def test_hub_killed_mid_rollout_resumes_where_it_was(tmp_path: Path) -> None:
    devices = [f"kill-{i}" for i in range(4)]
    rollout = {"batches": ["1", "100%"], "minHealthySecs": 2, "healthTimeoutSecs": 120}
    with running_hub(tmp_path) as hub:
        edge_devices(hub, devices, fleet="faults")
        put_configuration(hub, "v2", 2, rollout=rollout)
        state = eventually("batch 1", lambda: rollout_status(hub, "v2").get("updated") == 1)
        with service(hub.data_dir) as svc:
            first = eventually("one applied", lambda: applied(svc, devices, "v2"))
        assert first == {first_in_order(devices)}
        state = rollout_status(hub, "v2")
        kill9(hub)
    assert state["state"] == "inProgress" and state["batch"] == 1

    with running_hub(tmp_path) as hub, service(hub.data_dir) as svc:
        after = rollout_status(hub, "v2")
        assert (after["state"], after["batch"], after["updated"]) == ("inProgress", 1, 1)
        time.sleep(2)  # a few ticks of the new worker: nothing new without a healthy report
        assert applied(svc, devices, "v2") == first
        (device,) = first
        assert report_healthy(svc, device)
        eventually("batch 2", lambda: rollout_status(hub, "v2")["updated"] == 4)
        # the batch opens in the rollout state first; its devices are written right after
        eventually("all applied", lambda: applied(svc, devices, "v2") == set(devices))

        def done() -> bool:
            for other in devices:
                report_healthy(svc, other)
            return bool(rollout_status(hub, "v2")["state"] == "completed")

        eventually("completed", done)
        final = rollout_status(hub, "v2")
        assert (final["healthy"], final["failed"]) == (4, 0)
        for other in devices:
            assert rows_for(hub, other, "v2") == 1, history(hub, other)


# ---------------------------------------------------------------------- 2. agent offline
def start_agent(hub: RunningHub, workdir: Path, device: str) -> AgentProcess:
    with hub.client() as client:
        key = client.get_device(device)["authentication"]["symmetricKey"]["primaryKey"]
    with rest(hub) as api:
        creds = api.get(f"/devices/{device}/mqttCredentials").json()
    scheme = "mqtts" if creds["tls"] else "mqtt"
    agent = AgentProcess(
        workdir,
        device,
        "process",
        provisioning={
            "source": "manual",
            "connection_string": f"HostName=127.0.0.1:{hub.port};DeviceId={device};"
            f"SharedAccessKey={key}",
        },
        hub={
            "mqtt_url": f"{scheme}://{creds['host']}:{creds['port']}",
            "ca_file": creds["ca_file"],
        },
    )
    agent.start()
    return agent


def agent_twin(hub: RunningHub, device: str) -> dict[str, Any]:
    with hub.client() as client:
        twin: dict[str, Any] = client.get_twin(device, EDGE_AGENT)
    return twin


def desired_command(hub: RunningHub, device: str) -> str:
    command: str = agent_twin(hub, device)["properties"]["desired"]["modules"]["cam"]["settings"][
        "command"
    ]
    return command


def converged(hub: RunningHub, device: str, command: str) -> bool:
    twin = agent_twin(hub, device)
    desired, reported = twin["properties"]["desired"], twin["properties"]["reported"]
    cam = (reported.get("modules") or {}).get("cam") or {}
    return (
        reported.get("lastDesiredVersion") == desired["$version"]
        and (reported.get("lastDesiredStatus") or {}).get("code") == 200
        and desired_command(hub, device) == command
        and cam.get("runtimeStatus") == "running"
    )


def test_agent_offline_when_its_batch_activates_fails_and_rolls_back(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    devices = [f"off-{tag}-{i}" for i in range(2)]
    offline = first_in_order(devices)
    online = next(d for d in devices if d != offline)
    rollout = {"batches": ["1", "100%"], "minHealthySecs": 1, "healthTimeoutSecs": 8}
    v1, v2 = "sleep 3601", "sleep 3602"
    with running_hub(tmp_path) as hub:
        edge_devices(hub, devices, fleet="faults")
        agents = {d: start_agent(hub, tmp_path / d, d) for d in devices}
        try:
            put_configuration(hub, "v1", 1, v1)
            for device in devices:
                eventually(f"{device} on v1", partial(converged, hub, device, v1), 60)
            agents[offline].kill9()
            put_configuration(hub, "v2", 2, v2, rollout=rollout)
            eventually("v2 given", lambda: desired_command(hub, offline) == v2)
            activated = time.monotonic()
            state = rollout_status(hub, "v2")
            assert (state["state"], state["updated"], state["pending"]) == ("inProgress", 1, 1)
            time.sleep(4)
            assert rollout_status(hub, "v2")["pending"] == 1  # well within healthTimeoutSecs
            state = eventually(
                "rolled back",
                lambda: (s := rollout_status(hub, "v2"))["state"] == "rolledBack" and s,
                20,
            )
            assert time.monotonic() - activated >= 3.5
            assert state["failed"] == 1 and f"{offline}: no report within 8 s" in state["reason"]
            # the rollback gives the offline device v1 again; the online one never saw v2
            assert desired_command(hub, offline) == v1
            assert rows_for(hub, online, "v2") == 0
            assert converged(hub, online, v1)
            agents[offline].start()
            eventually("offline device back on v1", lambda: converged(hub, offline, v1), 60)
            assert [[c["id"] for c in row["configurations"]] for row in history(hub, offline)] == [
                ["v1"],
                ["v2"],
                ["v1"],
            ]
        finally:
            for agent in agents.values():
                agent.stop()


# ---------------------------------------------------------------------- 3. two hubs, one database
def test_two_hubs_on_one_database_advance_a_rollout_once(tmp_path: Path) -> None:
    devices = [f"pair-{i}" for i in range(6)]
    rollout = {"batches": ["1", "50%", "100%"], "minHealthySecs": 1, "healthTimeoutSecs": 120}
    with (
        temporary_database() as url,
        running_hub(tmp_path / "a", database_url=url) as hub_a,
        running_hub(tmp_path / "b", database_url=url) as hub_b,
        service(tmp_path / "svc", url) as svc,
    ):
        edge_devices(hub_a, devices, fleet="faults")
        put_configuration(hub_b, "v1", 1, "sleep 3601")
        eventually("v1 applied", lambda: applied(svc, devices, "v1") == set(devices))
        for device in devices:
            report_healthy(svc, device)
        before = {
            d: svc.twins.get_twin(d, EDGE_AGENT)["properties"]["desired"]["$version"]
            for d in devices
        }
        put_configuration(hub_a, "v2", 2, "sleep 3602", rollout=rollout)

        # Another hub may apply part of a batch before the hub that opened it gets to the rest,
        # so the applied count may pass through values between the batch sizes; it never runs
        # ahead of the batch the shared rollout state has opened, and each batch opens once.
        opened: list[int] = []
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = applied(svc, devices, "v2")
            status = rollout_status(hub_b, "v2")
            assert seen <= now, f"the applied set shrank: {seen} -> {now}"
            assert len(now) <= status["updated"], (now, status)
            if not opened or opened[-1] != status["updated"]:
                opened.append(status["updated"])
            seen = now
            for device in now:
                report_healthy(svc, device)
            if status["state"] == "completed":
                break
            time.sleep(0.2)
        state = rollout_status(hub_a, "v2")
        assert state["state"] == "completed", state
        assert opened == [1, 3, 6]
        assert seen == set(devices)
        assert (state["healthy"], state["failed"]) == (6, 0)
        for device in devices:
            assert rows_for(hub_a, device, "v2") == 1, history(hub_a, device)
            version = svc.twins.get_twin(device, EDGE_AGENT)["properties"]["desired"]["$version"]
            assert version == before[device] + 1
        for hub in (hub_a, hub_b):
            assert "Traceback" not in hub.log()


# ---------------------------------------------------------------------- 4. bad bodies
def _valid(**changes: Any) -> dict[str, Any]:
    body = {
        "id": "bad",
        "content": base_content(cam="sleep 1"),
        "targetCondition": "tags.fleet='faults'",
        "priority": 1,
    }
    body.update(changes)
    return body


def _body(**changes: Any) -> bytes:
    return json.dumps(_valid(**changes)).encode()


def _agent_modules(**module: Any) -> dict[str, Any]:
    content = base_content(cam="sleep 1")
    cam = content["modulesContent"][EDGE_AGENT]["properties.desired"]["modules"]["cam"]
    cam.update(module)
    return content


def _module_twin(size: int) -> dict[str, Any]:
    content = base_content(cam="sleep 1")
    content["modulesContent"]["cam"] = {"properties.desired": {"blob": "x" * size}}
    return content


MODULE_TWIN = "content.modulesContent.cam.properties.desired"
CREATE_OPTIONS = (
    "content.modulesContent.$edgeAgent.properties.desired.modules.cam.settings.createOptions"
)
BAD_BODIES: list[tuple[str, bytes, str]] = [  # name, body, the path the answer names
    ("not json", b"{not json", "body:1"),
    ("json array", b"[1, 2]", "body"),
    ("1 MB content", _body(content=_module_twin(1024 * 1024)), MODULE_TWIN),
    ("unbalanced quotes", _body(targetCondition="tags.fleet='faults"), "targetCondition"),
    (
        "negative timeout",
        _body(rollout={"batches": ["100%"], "healthTimeoutSecs": -5}),
        "rollout.healthTimeoutSecs",
    ),
    (
        "createOptions chunk over 512",
        _body(content=_agent_modules(settings={"createOptions": "{" + "x" * 600 + "}"})),
        CREATE_OPTIONS,
    ),
    ("module twin over 32 KB", _body(content=_module_twin(33 * 1024)), MODULE_TWIN),
    ("wrong id", _body(id="other"), "id"),
]


@pytest.fixture(scope="module")
def http_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with running_hub(tmp_path_factory.mktemp("http")) as hub:
        yield hub


def test_bad_configuration_bodies_get_a_4xx_with_a_path(http_hub: RunningHub) -> None:
    hub = http_hub
    with rest(hub) as api:
        headers = {"Content-Type": "application/json"}
        for name, body, path in BAD_BODIES:
            reply = api.put("/configurations/bad", content=body, headers=headers)
            assert 400 <= reply.status_code < 500, (name, reply.status_code, reply.text)
            assert reply.json()["path"] == path, (name, reply.text)
        assert api.get("/configurations/bad").status_code == 404
        created = api.put("/configurations/bad", json=_valid())
        assert created.status_code == 201, created.text
        update = _valid(content=base_content(cam="sleep 2"))
        reply = api.put("/configurations/bad", json=update, headers={"If-Match": "*"})
        assert reply.status_code == 400 and reply.json()["path"] == "content", reply.text
        assert api.get("/configurations/bad").json()["content"] == created.json()["content"]
        for action in ("pause", "resume", "abort"):  # no rollout to act on
            reply = api.post(f"/configurations/bad/rollout/{action}")
            assert reply.status_code == 400 and reply.json()["path"] == "rollout", reply.text
        assert "Traceback" not in hub.log()


JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
ROLLOUT_BODY = {"batches": ["1", "50%"], "healthTimeoutSecs": 60, "minHealthySecs": 5}


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out += _paths(value, (*prefix, index))
    return out


@st.composite
def mutated_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with rollout, one value (anywhere) replaced by any JSON or dropped."""
    body = copy.deepcopy(_valid(rollout=ROLLOUT_BODY, labels={"a": "b"}))
    path = draw(st.sampled_from(_paths(body)[1:]))
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON)
    return body


@given(body=mutated_bodies())
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_mutated_configuration_bodies_never_fail_the_hub(
    http_hub: RunningHub, body: dict[str, Any]
) -> None:
    cid = f"m-{uuid.uuid4().hex[:8]}"
    if body.get("id") == "bad":
        body["id"] = cid
    with rest(http_hub) as api:
        reply = api.put(f"/configurations/{cid}", json=body)
        assert reply.status_code < 500, (body, reply.text)
        if reply.status_code >= 400:
            assert reply.json()["path"] is not None, reply.text
        else:
            assert api.delete(f"/configurations/{cid}").status_code == 204
