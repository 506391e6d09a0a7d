"""``edgefleet deployment create|list|show|status|pause|resume|abort|delete|history`` against a
real hub process."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud_hub.client_cli.deployment_view import (
    batch_progress,
    configuration_body,
    module_names,
    parse_pairs,
)
from edgefleet.hubclient import HubClientError
from tests.deployments.test_configurations import base_content, layered_content
from tests.support.hub import RunningHub, running_hub

ROLLOUT = {"batches": ["1", "100%"], "healthTimeoutSecs": 600, "minHealthySecs": 5}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with running_hub(tmp_path_factory.mktemp("deployment-cli")) as running:
        yield running


def cli(hub: RunningHub, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "composition.cli", "deployment", *args],
        env={**hub.cli_env(), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli_json(hub: RunningHub, *args: str) -> Any:
    done = cli(hub, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def write(path: Path, doc: Any) -> Path:
    path.write_text(yaml.safe_dump(doc) if path.suffix == ".yaml" else json.dumps(doc))
    return path


def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def edge_devices(hub: RunningHub, ring: str, *ids: str) -> None:
    with hub.client() as client:
        for device_id in ids:
            client.create_device(device_id, {"capabilities": {"iotEdge": True}})
            client.patch_twin(device_id, {"tags": {"ring": ring}})


def rollout_state(hub: RunningHub, config_id: str) -> str:
    with hub.client() as client:
        status = client.get_configuration(config_id).get("rolloutStatus") or {}
    return str(status.get("state", ""))


def test_create_base_and_layered_then_list_show_status(hub: RunningHub, tmp_path: Path) -> None:
    edge_devices(hub, "a", "cli-a1", "cli-a2")
    base = write(tmp_path / "base.yaml", base_content(cam="cam"))
    created = cli_json(
        hub,
        "create",
        "cli-base",
        "--content",
        str(base),
        "--target-condition",
        "tags.ring='a'",
        "--priority",
        "10",
        "--label",
        "release=v1",
        "--label",
        "team=ops",
        "--metric",
        "all=SELECT deviceId FROM devices WHERE tags.ring='a'",
    )
    assert created["id"] == "cli-base" and created["priority"] == 10
    assert created["labels"] == {"release": "v1", "team": "ops"}
    assert created["metrics"]["queries"]["all"].startswith("SELECT deviceId")
    assert "rollout" not in created

    wrapper = write(
        tmp_path / "layer.json",
        {"content": layered_content("extra", "extra", 1), "labels": {"from": "file"}},
    )
    done = cli(
        hub,
        "create",
        "cli-layer",
        "--content",
        str(wrapper),
        "--layered",
        "--target-condition",
        "tags.ring='a'",
        "--priority",
        "5",
    )
    assert done.returncode == 0, done.stderr
    assert "created layered deployment cli-layer" in done.stdout

    listed = {c["id"]: c for c in cli_json(hub, "list")}
    assert {"cli-base", "cli-layer"} <= set(listed)
    assert listed["cli-layer"]["labels"] == {"from": "file"}
    table = cli(hub, "list")
    assert table.returncode == 0 and "cli-layer" in table.stdout and "layered" in table.stdout
    assert cli_json(hub, "list", "--top", "1")[0]["id"] == "cli-base"

    shown = cli_json(hub, "show", "cli-base")
    assert shown["targetCondition"] == "tags.ring='a'" and shown["etag"] == created["etag"]

    def counted() -> Any:
        status = cli_json(hub, "status", "cli-base")
        return status if status["systemMetrics"].get("appliedCount") == 2 else None

    status = wait_for(counted)
    assert status["systemMetrics"]["targetedCount"] == 2
    assert status["metrics"]["all"] == 2
    assert status["rolloutStatus"] is None
    human = cli(hub, "show", "cli-base")
    assert human.returncode == 0 and "applied" in human.stdout and "all" in human.stdout


def test_invalid_manifest_is_rejected_locally_with_every_path(
    hub: RunningHub, tmp_path: Path
) -> None:
    bad = copy.deepcopy(base_content(cam="cam"))
    agent = bad["modulesContent"]["$edgeAgent"]["properties.desired"]
    agent["modules"]["cam"]["restartPolicy"] = "sometimes"
    bad["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["up"] = 5
    done = cli(hub, "create", "cli-bad", "--content", str(write(tmp_path / "bad.json", bad)))
    assert done.returncode == 1
    assert "modulesContent.$edgeAgent.properties.desired.modules.cam.restartPolicy" in done.stderr
    assert "modulesContent.$edgeHub.properties.desired.routes.up" in done.stderr
    assert "Traceback" not in done.stderr
    with hub.client() as client, pytest.raises(HubClientError) as missing:
        client.get_configuration("cli-bad")
    assert missing.value.status == 404

    good = str(write(tmp_path / "good.json", base_content(cam="cam")))
    query = cli(hub, "create", "cli-bad", "--content", good, "--metric", "m=SELECT nonsense(")
    assert query.returncode == 1 and "metrics.queries.m" in query.stderr
    rollout = write(tmp_path / "rollout.json", {"batches": []})
    refused = cli(hub, "create", "cli-bad", "--content", good, "--rollout", str(rollout))
    assert refused.returncode == 1 and "rollout.batches" in refused.stderr
    with hub.client() as client:
        assert "cli-bad" not in {c["id"] for c in client.list_configurations()}


def test_missing_configuration_is_one_line(hub: RunningHub) -> None:
    for args in (["show", "nope"], ["pause", "nope"], ["delete", "nope"]):
        done = cli(hub, *args)
        assert done.returncode == 1
        assert done.stderr.strip() == "error: configuration 'nope' not found"
    missing = cli(hub, "history", "no-device")
    assert (
        missing.returncode == 1 and missing.stderr.strip() == "error: device 'no-device' not found"
    )


def test_rollout_pause_resume_abort_and_history(hub: RunningHub, tmp_path: Path) -> None:
    edge_devices(hub, "r", "cli-r1", "cli-r2", "cli-r3")
    content = write(tmp_path / "r.json", base_content(sensor="sensor"))
    rollout = write(tmp_path / "rollout.yaml", ROLLOUT)
    done = cli(
        hub,
        "create",
        "cli-roll",
        "--content",
        str(content),
        "--target-condition",
        "tags.ring='r'",
        "--rollout",
        str(rollout),
    )
    assert done.returncode == 0, done.stderr
    wait_for(lambda: rollout_state(hub, "cli-roll") == "inProgress")

    assert "paused" in cli(hub, "pause", "cli-roll").stdout
    assert rollout_state(hub, "cli-roll") == "paused"
    assert "inProgress" in cli(hub, "resume", "cli-roll").stdout

    status = cli_json(hub, "status", "cli-roll")
    assert status["rolloutStatus"]["batch"] == 1 and status["rolloutStatus"]["batches"] == 2
    assert status["rolloutStatus"]["updated"] == 1 and status["rolloutStatus"]["pending"] == 1
    assert [b["state"] for b in status["batches"]] == ["active", "waiting"]

    with hub.client() as client:
        first = wait_for(
            lambda: [d for d in ("cli-r1", "cli-r2", "cli-r3") if client.device_deployments(d)]
        )
    history = cli_json(hub, "history", first[0])
    assert history[0]["configurations"][0]["id"] == "cli-roll"
    table = cli(hub, "history", first[0])
    assert table.returncode == 0 and "cli-roll@" in table.stdout

    watcher = subprocess.Popen(
        [sys.executable, "-m", "composition.cli", "deployment", "status", "cli-roll"]
        + ["--watch", "--json", "--interval", "0.2"],
        env=hub.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert json.loads(watcher.stdout.readline())["rolloutStatus"]["state"] == "inProgress"
        aborted = cli(hub, "abort", "cli-roll")
        assert aborted.returncode == 0 and "rolledBack" in aborted.stdout
        out, err = watcher.communicate(timeout=15)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    last = json.loads(out.strip().splitlines()[-1])
    assert last["rolloutStatus"]["state"] == "rolledBack"
    assert last["rolloutStatus"]["reason"] == "aborted by the operator"

    again = cli(hub, "pause", "cli-roll")
    assert again.returncode == 1 and "rolledBack" in again.stderr

    stale = cli(hub, "delete", "cli-roll", "--etag", "not-it")
    assert stale.returncode == 1 and "Traceback" not in stale.stderr
    assert cli(hub, "delete", "cli-roll").returncode == 0
    assert "cli-roll" not in {c["id"] for c in cli_json(hub, "list")}


def test_body_from_options_and_batch_progress() -> None:
    manifest = base_content(cam="cam")
    body = configuration_body(
        "x",
        {"content": manifest, "priority": 1, "labels": {"a": "1"}},
        target_condition="tags.x=1",
        priority=None,
        labels={"b": "2"},
        metrics={"m": "SELECT deviceId FROM devices"},
    )
    assert body["content"] == manifest and body["priority"] == 1
    assert body["labels"] == {"a": "1", "b": "2"} and body["targetCondition"] == "tags.x=1"
    bare = configuration_body(
        "x",
        manifest["modulesContent"],
        target_condition=None,
        priority=None,
        labels={},
        metrics={},
    )
    assert bare["content"] == manifest
    assert module_names(body) == ["cam"]
    assert module_names({"content": layered_content("extra", "extra", 1)}) == ["extra"]
    with pytest.raises(ValueError, match="--label"):
        parse_pairs(["novalue"], "--label")
    config = {
        "rollout": {"batches": ["1", "50%", "100%"]},
        "systemMetrics": {"results": {"targetedCount": 10}},
        "rolloutStatus": {
            "state": "inProgress",
            "batch": 2,
            "batches": 3,
            "updated": 5,
            "healthy": 2,
            "failed": 1,
            "pending": 2,
        },
    }
    bars = [(b.size, b.decided, b.state) for b in batch_progress(config)]
    assert bars == [(1, 1, "done"), (4, 2, "active"), (5, 0, "waiting")]
