"""The device/twin/query CLI against a real hub process."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.hub import RunningHub, edgefleet_cmd, running_hub


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with running_hub(tmp_path_factory.mktemp("cli"), public_host_name="hub.example.test") as hub:
        yield hub


def cli(hub: RunningHub, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        edgefleet_cmd(*args),
        capture_output=True,
        text=True,
        timeout=120,
        env={**hub.cli_env(), "COLUMNS": "200"},  # tables never wrap a word, whatever the CI's
    )
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def cli_json(hub: RunningHub, *args: str) -> Any:
    return json.loads(cli(hub, *args, "--json").stdout)


def test_device_commands(live_hub: RunningHub) -> None:
    device = cli_json(live_hub, "device", "create", "cam-1", "--edge")
    assert device["capabilities"]["iotEdge"] is True
    key = device["authentication"]["symmetricKey"]["primaryKey"]
    table = cli(live_hub, "device", "list").stdout
    assert "cam-1" in table and "Disconnected" in table
    assert cli_json(live_hub, "device", "show", "cam-1")["deviceId"] == "cam-1"
    assert cli_json(live_hub, "device", "show", "cam-1", "-m", "$edgeAgent")["moduleId"]

    conn = cli(live_hub, "device", "connection-string", "cam-1").stdout.strip()
    assert conn == f"HostName=hub.example.test;DeviceId=cam-1;SharedAccessKey={key}"

    rotated = cli_json(live_hub, "device", "rotate-key", "cam-1", "--which", "primary")
    new_key = rotated["authentication"]["symmetricKey"]["primaryKey"]
    assert new_key != key
    assert (
        rotated["authentication"]["symmetricKey"]["secondaryKey"]
        == (device["authentication"]["symmetricKey"]["secondaryKey"])
    )

    cli(live_hub, "device", "delete", "cam-1")
    missing = cli(live_hub, "device", "show", "cam-1", ok=False)
    assert missing.returncode != 0
    assert missing.stderr.strip().count("\n") == 0 and "404" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_twin_and_query_commands(live_hub: RunningHub) -> None:
    for name, region in (("q-1", "west"), ("q-2", "east"), ("q-3", "west")):
        cli(live_hub, "device", "create", name)
        cli(live_hub, "twin", "patch", name, "--tags", json.dumps({"region": region}))
    twin = cli_json(live_hub, "twin", "patch", "q-1", "--desired", '{"fps": 7}')
    assert twin["properties"]["desired"]["fps"] == 7
    shown = cli(live_hub, "twin", "show", "q-1").stdout
    assert "desired.fps" in shown and "7" in shown
    rows = cli_json(live_hub, "query", "SELECT deviceId FROM devices WHERE tags.region = 'west'")
    assert rows == [{"deviceId": "q-1"}, {"deviceId": "q-3"}]
    table = cli(live_hub, "query", "run", "SELECT * FROM devices WHERE tags.region = 'east'")
    assert "q-2" in table.stdout and "q-1" not in table.stdout
    bad = cli(live_hub, "query", "SELECT * FROM nowhere", ok=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: hub answered 400")
    bad_json = cli(live_hub, "twin", "patch", "q-1", "--tags", "{oops", ok=False)
    assert bad_json.returncode != 0 and "not valid JSON" in bad_json.stderr


def test_export_import_round_trip(live_hub: RunningHub, tmp_path: Path) -> None:
    cli(live_hub, "device", "create", "exp-1", "--edge")
    cli(
        live_hub,
        "twin",
        "patch",
        "exp-1",
        '{"tags": {"t": 1}, "properties": {"desired": {"d": 2}}}',
    )
    out = tmp_path / "devices.jsonl"
    cli(live_hub, "device", "export", str(out))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    exported = next(r for r in records if r["deviceId"] == "exp-1")
    assert exported["tags"] == {"t": 1} and exported["properties"]["desired"] == {"d": 2}

    with running_hub(tmp_path / "second") as other:
        summary = cli_json(other, "device", "import", str(out))
        assert summary == {"imported": len(records), "errors": []}
        copy = cli_json(other, "device", "show", "exp-1")
        assert copy["authentication"] == exported["authentication"]
        twin = cli_json(other, "twin", "show", "exp-1")
        assert twin["tags"] == {"t": 1} and twin["properties"]["desired"]["d"] == 2
        # importing again updates in place
        cli(other, "twin", "patch", "exp-1", '{"tags": {"t": 5}}')
        assert cli_json(other, "device", "import", str(out))["imported"] == len(records)
        assert cli_json(other, "twin", "show", "exp-1")["tags"] == {"t": 1}


def test_client_errors_are_one_line(tmp_path: Path) -> None:
    env_less = subprocess.run(
        edgefleet_cmd("device", "list", "--hub", "http://127.0.0.1:1", "--token", "t"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert env_less.returncode != 0
    assert env_less.stderr.startswith("error: cannot reach hub")
    assert env_less.stderr.strip().count("\n") == 0


def test_set_modules_applies_a_manifest_file(live_hub: RunningHub, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    manifest = repo / "manifests" / "process-demo.json"
    cli_json(live_hub, "device", "create", "edge-cli", "--edge")
    cli(live_hub, "device", "set-modules", "edge-cli", "--content", str(manifest))
    twin = cli_json(live_hub, "twin", "show", "edge-cli", "-m", "$edgeAgent")
    wanted = json.loads(manifest.read_text())["modulesContent"]["$edgeAgent"]
    assert twin["properties"]["desired"]["modules"].keys() == (
        wanted["properties.desired"]["modules"].keys()
    )

    broken = tmp_path / "broken.json"
    broken.write_text('{"modulesContent": {"$edgeAgent": {"properties.desired": {}}}}')
    refused = cli(live_hub, "device", "set-modules", "edge-cli", "--content", str(broken), ok=False)
    assert refused.returncode != 0 and "400" in refused.stderr and "Traceback" not in refused.stderr
