"""The messaging CLI against a live hub: credentials, certificates, simulated devices, bench."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet.sdk.device_client import DeviceClient
from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import create_device, wait_until


def run_cli(hub: RunningHub | None, *args: str, timeout: float = 120) -> Any:
    env = hub.cli_env() if hub is not None else None
    return subprocess.run(
        [sys.executable, "-m", "composition.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with running_hub(tmp_path_factory.mktemp("hub-cli")) as running:
        yield running


def test_mqtt_credentials_json(hub: RunningHub) -> None:
    create_device(hub, "cli-creds")
    result = run_cli(hub, "device", "mqtt-credentials", "cli-creds", "--json")
    assert result.returncode == 0, result.stderr
    creds = json.loads(result.stdout)
    keys = {"host", "port", "tls", "ca_file", "client_id", "username", "password", "cert_port"}
    assert set(creds) == keys
    assert creds["cert_port"] and creds["cert_port"] != creds["port"]
    assert creds["client_id"] == creds["username"] == "cli-creds"
    assert creds["tls"] is True and Path(creds["ca_file"]).exists()


def test_unknown_device_is_one_clear_error(hub: RunningHub) -> None:
    result = run_cli(hub, "device", "mqtt-credentials", "nobody", "--json")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_device_cert_writes_files(hub: RunningHub, tmp_path: Path) -> None:
    create_device(hub, "cli-x509")
    result = run_cli(hub, "device", "cert", "cli-x509", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert Path(out["certFile"]).read_text().startswith("-----BEGIN CERTIFICATE")
    assert "PRIVATE KEY" in Path(out["keyFile"]).read_text()
    # what the command printed is enough to connect (to the embedded broker's X.509 listener)
    client = DeviceClient.create_from_x509_certificate(
        out["certFile"],
        out["keyFile"],
        out["hostname"],
        "cli-x509",
        ca_file=out["caFile"],
        outbox_path=tmp_path / "outbox.db",
    )
    try:
        client.connect(20)
        assert client.patch_twin_reported_properties({"cli": True}) >= 2
    finally:
        client.shutdown()
    revoked = run_cli(hub, "device", "cert", "cli-x509", "--revoke", "--json")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout)["revokedSerialNumber"] == out["serialNumber"]


def test_simulate_sends_what_the_hub_stores(hub: RunningHub) -> None:
    args = ["--count", "3", "--rate", "20", "--duration", "2", "--prefix", "simt-", "--json"]
    result = run_cli(hub, "device", "simulate", *args)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["devices"] == 3 and figures["sent"] > 0 and figures["drained"]

    def stored() -> int:
        total = 0
        with hub.client() as api:
            for i in range(3):
                body = api.request(
                    "GET", f"/devices/simt-{i}/messages", params={"limit": 10_000}
                ).json()
                total += len(body["messages"])
        return total

    assert wait_until(lambda: stored() == figures["sent"], 30)


def test_bench_ingest_reports_figures() -> None:
    args = ["bench", "ingest", "--devices", "2", "--rate", "200", "--messages", "100", "--json"]
    result = run_cli(None, *args, timeout=240)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["stored"] == figures["messages"] == 200
    assert figures["storedMsgPerS"] > 0 and figures["baseline"]["received"] == 200
    assert figures["ratioToBaseline"] > 0


def test_bench_ingest_workers_reports_each_worker_count() -> None:
    from tests.support.pg import PG_ADMIN_URL

    args = ["bench", "ingest", "--workers", "1,2", "--database-url", PG_ADMIN_URL]
    args += ["--devices", "2", "--rate", "200", "--messages", "60", "--json"]
    result = run_cli(None, *args, timeout=280)
    assert result.returncode == 0, result.stderr
    phases = json.loads(result.stdout)["phases"]
    assert [p["workers"] for p in phases] == [1, 2]
    assert all(p["stored"] == p["messages"] == 120 for p in phases)
    assert phases[0]["ratioToFirst"] == 1.0 and phases[1]["storedMsgPerS"] > 0
    for bad, said in (("0", "from 1 to 64"), ("1,x", "from 1 to 64")):
        refused = run_cli(None, "bench", "ingest", "--workers", bad, timeout=60)
        assert refused.returncode == 1 and said in refused.stderr
    no_db = run_cli(None, "bench", "ingest", "--workers", "1", timeout=60)
    assert no_db.returncode == 1 and "--database-url postgresql" in no_db.stderr
