"""Two hub processes sharing one PostgreSQL database (the scale-out setup)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.hub import RunningHub, edgefleet_cmd, running_hub
from tests.support.mqtt import create_device, credentials, mosquitto, wait_until
from tests.support.pg import temporary_database


def test_two_hubs_share_a_postgresql_database(tmp_path: Path) -> None:
    with (
        temporary_database() as url,
        running_hub(tmp_path / "a", database_url=url) as hub_a,
        running_hub(tmp_path / "b", database_url=url) as hub_b,
    ):
        client_a, client_b = hub_a.client(), hub_b.client()
        client_a.create_device("shared")
        assert client_b.get_device("shared")["deviceId"] == "shared"

        def patch(client_name: str) -> None:
            client = hub_a.client() if client_name == "a" else hub_b.client()
            with client:
                for i in range(10):
                    client.patch_twin(
                        "shared", {"properties": {"desired": {f"{client_name}{i}": i}}}
                    )

        threads = [threading.Thread(target=patch, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        desired = client_b.get_twin("shared")["properties"]["desired"]
        assert len([k for k in desired if not k.startswith("$")]) == 20
        assert desired["$version"] == 21
        client_a.close()
        client_b.close()


def stored_ids(database_url: str, device_id: str) -> list[str]:
    """The message ids the hub stored for a device, read from the database itself."""
    from sqlalchemy import create_engine, select

    from cloud_hub.mqtt.tables import MessageRow

    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(MessageRow.message_id).where(MessageRow.device_id == device_id)
            )
            return [r[0] for r in rows]
    finally:
        engine.dispose()


def ingested(hub: RunningHub) -> int:
    with hub.client() as api:
        return int(api.request("GET", "/messaging/stats").json()["stored"])


def test_two_hub_processes_split_ingest_on_one_broker_and_a_killed_one_loses_nothing(
    tmp_path: Path,
) -> None:
    """Two hubs on one PostgreSQL and one external mosquitto, each its own --instance: shared
    subscriptions split the telemetry; one is killed with -9 mid-stream and started again under
    the same instance (its persistent session): every message is stored once. Devices created
    through one hub are ingested by the other; methods go through either."""
    from edgefleet.sdk.device_client import DeviceClient, MethodResponse

    per_device, devices = 150, ["sc-0", "sc-1", "sc-2"]
    with (
        temporary_database() as url,
        mosquitto(tmp_path / "broker") as broker,
        contextlib.ExitStack() as stack,
    ):

        def hub(instance: str) -> RunningHub:
            shared = f"mqtt://127.0.0.1:{broker.port}"
            started = running_hub(
                tmp_path / instance, database_url=url, broker=shared, instance=instance
            )
            return stack.enter_context(started)

        hub_a, hub_b = hub("a"), hub("b")
        for name in devices:  # created through A only: B hears no event of them
            create_device(hub_a, name)
        clients = [
            DeviceClient.create_from_credentials(
                credentials(hub_a, name), outbox_path=tmp_path / f"{name}.db"
            )
            for name in devices
        ]
        for client in clients:
            stack.callback(client.shutdown)
            client.on_method_request_received = lambda req: (
                MethodResponse.create_from_method_request(req, 200, {"m": req.name})
            )
            client.connect(20)
        sent: dict[str, list[str]] = {name: [] for name in devices}

        def burst(count: int) -> None:
            for _ in range(count):
                for name, client in zip(devices, clients, strict=True):
                    sent[name].append(client.send_message({"n": len(sent[name])}))

        burst(per_device // 3)
        assert wait_until(lambda: ingested(hub_b) > 0, 30), "B ingested nothing"
        hub_b.process.kill()  # kill -9 under load
        hub_b.process.wait()
        burst(per_device // 3)
        hub_b = hub("b")  # the same instance: its persistent session and what it holds
        burst(per_device - 2 * (per_device // 3))
        for client in clients:
            assert client.wait_for_outbox_empty(60)

        def complete() -> bool:
            return all(sorted(stored_ids(url, name)) == sorted(sent[name]) for name in devices)

        assert wait_until(complete, 60), {
            n: len(set(sent[n]) - set(stored_ids(url, n))) for n in devices
        }
        assert ingested(hub_b) > 0  # the restarted B took its share (and its backlog)
        with hub_a.client() as api:
            a_stats = api.request("GET", "/messaging/stats").json()
        # shared, not copied: A stored only part, and never a message B had stored
        assert 0 < a_stats["stored"] < len(devices) * per_device
        assert a_stats["duplicates"] == 0
        for either in (hub_a, hub_b):  # either process sends methods and gets answers
            with either.client() as api:
                answer = api.request("POST", "/twins/sc-1/methods", json={"methodName": "ping"})
            assert answer.json() == {"status": 200, "payload": {"m": "ping"}}
        # a dashboard open on B follows a change made through A (LISTEN/NOTIFY)
        assert fleet_stream_sees(hub_b, lambda: patch_tags(hub_a, "sc-2", {"site": "x"}))
        # B stopped for good (scaled down): it left the shared subscriptions, so the broker
        # no longer keeps a share for it, and A stores everything sent afterwards
        hub_b.process.send_signal(signal.SIGTERM)
        assert hub_b.process.wait(60) == 0
        burst(20)
        for client in clients:
            assert client.wait_for_outbox_empty(60)
        assert wait_until(complete, 30), {
            n: len(set(sent[n]) - set(stored_ids(url, n))) for n in devices
        }


def patch_tags(hub: RunningHub, device_id: str, tags: dict[str, str]) -> None:
    with hub.client() as api:
        api.request("PATCH", f"/twins/{device_id}", json={"tags": tags}).raise_for_status()


def fleet_stream_sees(hub: RunningHub, change: Callable[[], None]) -> bool:
    """Whether the hub's dashboard fleet stream reports a change made by ``change``."""
    import httpx

    auth = {"Authorization": f"Bearer {hub.token}"}
    with httpx.Client(base_url=hub.url, timeout=30) as http:
        code = http.post("/ui/login-codes", headers=auth).json()
        assert http.get(code["path"]).status_code in (200, 303)
        with http.stream("GET", "/ui/fleet/stream", timeout=60) as stream:
            lines = stream.iter_lines()
            assert next(lines) == ": connected"
            change()
            deadline = time.monotonic() + 40  # heartbeats come every 15 s
            for line in lines:
                if line == "event: fleet":
                    return True
                if time.monotonic() > deadline:
                    return False
            return False


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--instance", "a"], "--instance needs --broker mqtt://... or mqtts://..."),
        (["--instance", "a/b", "--broker", "mqtt://127.0.0.1:1"], "--instance: instance name"),
    ],
)
def test_instances_need_a_shared_broker_and_a_plain_name(
    tmp_path: Path, args: list[str], said: str
) -> None:
    done = subprocess.run(
        edgefleet_cmd("hub", "serve", "--data-dir", str(tmp_path / "hub"), *args),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stderr.strip().startswith(f"error: {said}")


def test_workers_share_the_port_and_a_killed_worker_comes_back_under_its_name(
    tmp_path: Path,
) -> None:
    """`hub serve --workers 2`: both workers answer on the one port; a worker killed with -9 is
    started again as the same instance; SIGTERM stops them all."""

    import httpx

    with temporary_database() as url, mosquitto(tmp_path / "broker") as broker:
        shared = f"mqtt://127.0.0.1:{broker.port}"
        with running_hub(
            tmp_path, database_url=url, broker=shared, workers=2, instance="wk"
        ) as hub:

            def instances() -> dict[str, int]:
                seen: dict[str, int] = {}
                for _ in range(40):  # a new connection each time: the kernel picks a worker
                    with httpx.Client(base_url=hub.url, timeout=30) as http:
                        body = http.get(
                            "/messaging/stats", headers={"Authorization": f"Bearer {hub.token}"}
                        ).json()
                    seen[body["instance"]] = seen.get(body["instance"], 0) + 1
                return seen

            assert wait_until(lambda: set(instances()) == {"wk-0", "wk-1"}, 60)
            children = worker_pids(hub.process.pid)
            assert len(children) == 2
            os.kill(children[0], signal.SIGKILL)
            assert wait_until(
                lambda: (
                    len(worker_pids(hub.process.pid)) == 2
                    and children[0] not in worker_pids(hub.process.pid)
                ),
                60,
            )
            assert wait_until(lambda: set(instances()) == {"wk-0", "wk-1"}, 60)
            survivors = worker_pids(hub.process.pid)
            hub.process.send_signal(signal.SIGTERM)
            assert hub.process.wait(60) == 0
            assert all(not pid_alive(pid) for pid in survivors)


def worker_pids(parent: int) -> list[int]:
    """The worker processes of a `--workers` supervisor (its children)."""
    try:
        text = Path(f"/proc/{parent}/task/{parent}/children").read_text()
    except OSError:
        return []
    return sorted(int(pid) for pid in text.split())


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"
