"""The agent against a real hub: deployment from the $edgeAgent twin over MQTT, reported
properties on the hub, direct methods (`edgefleet logs`), and a reboot while the hub is down."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.hubclient import HubClientError
from tests.support.agent import AgentProcess, hub_agent, procs_with
from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import stop_managed_mosquitto, wait_until


def agent_desired(modules: dict[str, Any]) -> dict[str, Any]:
    return {
        "schemaVersion": "1.1",
        "runtime": {"type": "docker", "settings": {}},
        "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "a"}}},
        "modules": modules,
    }


def looping(marker: str) -> dict[str, Any]:
    script = "while :; do echo tick $IOTEDGE_MODULEID; sleep 0.2; done"
    return {"type": "process", "settings": {"command": ["sh", "-c", script, marker]}}


def hub_reported(hub: RunningHub, device: str) -> dict[str, Any]:
    with hub.client() as client:  # polled often: no pool of sockets left behind per call
        twin = client.get_twin(device, "$edgeAgent")
    reported: dict[str, Any] = twin["properties"]["reported"]
    return reported


def wait_hub(
    hub: RunningHub, device: str, what: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    rep: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            rep = hub_reported(hub, device)
            if check(rep):
                return rep
        except (KeyError, TypeError, HubClientError):  # not there yet, or a hiccup of the hub
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {rep}")


def test_agent_with_real_hub(tmp_path: Path) -> None:
    device = f"edge-{uuid.uuid4().hex[:6]}"
    m1, m2 = f"{tmp_path}/module-one", f"{tmp_path}/module-two"
    with running_hub(tmp_path) as hub:
        client = hub.client()
        client.create_device(device, {"capabilities": {"iotEdge": True}})
        headers = {"Authorization": f"Bearer {hub.token}"}
        agent = hub_agent(hub, tmp_path / "agent", device)
        mods = {"one": looping(m1), "two": {**looping(m2), "startupOrder": 1}}
        client.patch_twin(device, {"properties": {"desired": agent_desired(mods)}}, "$edgeAgent")
        routes = {"schemaVersion": "1.2", "routes": {"up": "FROM /messages/* INTO $upstream"}}
        client.patch_twin(device, {"properties": {"desired": routes}}, "$edgeHub")
        agent.start()
        try:
            version = client.get_twin(device, "$edgeAgent")["properties"]["desired"]["$version"]
            rep = wait_hub(
                hub,
                device,
                "running",
                lambda r: (
                    r["lastDesiredVersion"] == version
                    and r["modules"]["one"]["runtimeStatus"] == "running"
                    and r["modules"]["two"]["runtimeStatus"] == "running"
                ),
            )
            assert rep["lastDesiredStatus"]["code"] == 200
            assert rep["systemModules"]["edgeHub"]["runtimeStatus"] == "running"

            # edgefleet logs DEVICE MODULE --tail N goes through the hub's methods endpoint
            # "running" says the process started, not that it has printed: wait for 3 ticks
            one_log = agent.data_dir / "logs" / "one.log"
            assert wait_until(lambda: one_log.read_text().count("tick one\n") >= 3, timeout=60)
            out = subprocess.run(
                [sys.executable, "-m", "composition.cli", "logs", device, "one", "--tail", "2"],
                env=hub.cli_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            assert out.stdout.splitlines() == ["tick one", "tick one"]
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "composition.cli",
                    "logs",
                    device,
                    "one",
                    "--tail",
                    "3",
                    "--upload",
                    "--json",
                ],
                env=hub.cli_env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert out.returncode == 0, out.stderr
            uploaded = json.loads(out.stdout)
            assert uploaded["task"]["status"] == "Completed"
            (item,) = uploaded["uploads"]
            raw = httpx.get(
                f"{hub.url}/devices/{device}/logUploads/{item['name']}", headers=headers, timeout=60
            ).content
            assert [r["content"] for r in json.loads(gzip.decompress(raw))] == ["tick one"] * 3
            body = {
                "methodName": "restartModule",
                "payload": {"schemaVersion": "1.0", "id": "two"},
                "responseTimeoutInSeconds": 30,
            }
            pid_before = procs_with(m2)
            r = httpx.post(
                f"{hub.url}/twins/{device}/modules/$edgeAgent/methods",
                json=body,
                headers=headers,
                timeout=60,
            )
            assert r.status_code == 200 and r.json()["status"] == 200, r.text
            assert procs_with(m2) != pid_before and len(procs_with(m2)) == 1

            # a desired change arrives as a twin patch: module two is removed
            client.patch_twin(
                device, {"properties": {"desired": {"modules": {"two": None}}}}, "$edgeAgent"
            )
            wait_hub(hub, device, "two removed", lambda r: "two" not in r["modules"])
            assert procs_with(m2) == []

            # a bad deployment is reported with its code and path
            bad = {"modules": {"one": {"restartPolicy": "sometimes"}}}
            client.patch_twin(device, {"properties": {"desired": bad}}, "$edgeAgent")
            rep = wait_hub(hub, device, "400", lambda r: r["lastDesiredStatus"]["code"] == 400)
            assert "modules.one.restartPolicy" in rep["lastDesiredStatus"]["description"]
            assert len(procs_with(m1)) == 1
            fixed = {"modules": {"one": {"restartPolicy": "always"}}}
            client.patch_twin(device, {"properties": {"desired": fixed}}, "$edgeAgent")
            wait_hub(hub, device, "200", lambda r: r["lastDesiredStatus"]["code"] == 200)
            # a change of the $edgeHub twin alone is applied too (here: a broken route)
            bad_route = {"routes": {"up": "FROM /messages/* WHERE INTO $upstream"}}
            client.patch_twin(device, {"properties": {"desired": bad_route}}, "$edgeHub")
            rep = wait_hub(hub, device, "400", lambda r: r["lastDesiredStatus"]["code"] == 400)
            assert "routes" in rep["lastDesiredStatus"]["description"]
            assert agent.stop() == 0
        finally:
            agent.stop()
    # reboot with the hub gone: modules come back from the persisted deployment
    agent.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(procs_with(m1)) != 1:
            time.sleep(0.1)
        assert len(procs_with(m1)) == 1 and procs_with(m2) == []
    finally:
        assert agent.stop() == 0


def test_dps_group_enrollment_agent(tmp_path: Path) -> None:
    import base64

    group_key = base64.b64encode(uuid.uuid4().bytes * 2).decode()
    device = f"edge-{uuid.uuid4().hex[:6]}"
    marker = f"{tmp_path}/module-dps"
    with running_hub(tmp_path) as hub:
        headers = {"Authorization": f"Bearer {hub.token}"}
        group = {
            "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": group_key}},
            "capabilities": {"iotEdge": True},
        }
        assert (
            httpx.put(
                f"{hub.url}/enrollmentGroups/plant-a", json=group, headers=headers, timeout=60
            ).status_code
            == 200
        )
        # the broker endpoint is the hub's; any device's credentials tell where it is
        hub.client().create_device("probe")
        creds = httpx.get(
            f"{hub.url}/devices/probe/mqttCredentials", headers=headers, timeout=60
        ).json()
        scheme = "mqtts" if creds["tls"] else "mqtt"
        agent = AgentProcess(
            tmp_path / "agent",
            device,
            "process",
            provisioning={
                "source": "dps",
                "global_endpoint": hub.url,
                "attestation": {
                    "method": "symmetric_key",
                    "registration_id": device,
                    "enrollment_group_id": "plant-a",
                    "symmetric_key": group_key,
                },
            },
            hub={
                "mqtt_url": f"{scheme}://{creds['host']}:{creds['port']}",
                "ca_file": creds["ca_file"],
            },
        )
        agent.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if (
                    httpx.get(
                        f"{hub.url}/devices/{device}", headers=headers, timeout=60
                    ).status_code
                    == 200
                ):
                    break
                time.sleep(0.2)
            assert hub.client().get_device(device)["capabilities"]["iotEdge"] is True
            desired = agent_desired({"dps": looping(marker)})
            hub.client().patch_twin(device, {"properties": {"desired": desired}}, "$edgeAgent")
            wait_hub(
                hub, device, "running", lambda r: r["modules"]["dps"]["runtimeStatus"] == "running"
            )
            assert len(procs_with(marker)) == 1
            assert (agent.data_dir / "provisioning.json").exists()
        finally:
            assert agent.stop() == 0


def test_device_certificate_agent(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # a hub that had to be SIGKILLed leaves its mosquitto running: never past this test
    request.addfinalizer(lambda: stop_managed_mosquitto(tmp_path / "hub"))
    device = f"edge-{uuid.uuid4().hex[:6]}"
    marker = f"{tmp_path}/module-x509"
    with running_hub(tmp_path, broker="mosquitto") as hub:
        headers = {"Authorization": f"Bearer {hub.token}"}
        hub.client().create_device(device, {"capabilities": {"iotEdge": True}})
        issued = httpx.post(
            f"{hub.url}/devices/{device}/certificate", headers=headers, timeout=60
        ).json()
        creds = httpx.get(
            f"{hub.url}/devices/{device}/mqttCredentials", headers=headers, timeout=60
        ).json()
        (tmp_path / "device.pem").write_text(issued["certificate"])
        (tmp_path / "device.key").write_text(issued["privateKey"])
        (tmp_path / "ca.pem").write_text(issued["caCertificate"])
        hub.client().patch_twin(
            device,
            {"properties": {"desired": agent_desired({"x": looping(marker)})}},
            "$edgeAgent",
        )
        agent = AgentProcess(
            tmp_path / "agent",
            device,
            "process",
            provisioning={
                "source": "manual",
                "iothub_hostname": f"127.0.0.1:{hub.port}",
                "device_id": device,
                "authentication": {
                    "method": "x509",
                    "identity_cert": str(tmp_path / "device.pem"),
                    "identity_pk": str(tmp_path / "device.key"),
                },
            },
            hub={
                "mqtt_url": f"mqtts://{creds['host']}:{creds['cert_port']}",
                "ca_file": str(tmp_path / "ca.pem"),
            },
            edge_hub=False,
        )
        agent.start()
        try:
            wait_hub(
                hub, device, "running", lambda r: r["modules"]["x"]["runtimeStatus"] == "running"
            )
            assert len(procs_with(marker)) == 1
        finally:
            assert agent.stop() == 0
