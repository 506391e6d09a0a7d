"""DPS-style self-registration against a real hub, and agent config validation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from edge_agent.config import ConfigError, derive_device_key, load_config
from edge_agent.provisioning import Registration, register, sas_token
from tests.support.hub import running_hub

GROUP_KEY = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_device_key_derivation() -> None:
    expected = base64.b64encode(
        hmac.new(base64.b64decode(GROUP_KEY), b"edge-7", hashlib.sha256).digest()
    ).decode()
    assert derive_device_key(GROUP_KEY, "edge-7") == expected
    assert derive_device_key(GROUP_KEY, "edge-8") != expected


def test_register_with_enrollment_group(tmp_path: Path) -> None:
    with running_hub(tmp_path) as hub:
        headers = {"Authorization": f"Bearer {hub.token}"}
        body = {
            "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": GROUP_KEY}},
            "capabilities": {"iotEdge": True},
        }
        r = httpx.put(f"{hub.url}/enrollmentGroups/line-1", json=body, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        key = derive_device_key(GROUP_KEY, "edge-7")
        reg = Registration(tmp_path / "agent", hub.url, "line-1", "edge-7", key)
        (tmp_path / "agent").mkdir()
        reg.ensure(first_timeout=60)
        assert reg.done.is_set() and reg.result and reg.result["status"] == "assigned"
        device = hub.client().get_device("edge-7")
        assert device["capabilities"]["iotEdge"] is True
        assert device["authentication"]["symmetricKey"]["primaryKey"] == key
        # the $edgeAgent module twin exists: the agent can read its deployment
        assert hub.client().get_twin("edge-7", "$edgeAgent")["moduleId"] == "$edgeAgent"
        # idempotent: a second boot registers again without error; cached afterwards
        assert register(hub.url, "line-1", "edge-7", key, timeout=60)["status"] == "assigned"
        assert Registration(
            tmp_path / "agent", "http://127.0.0.1:9", "line-1", "edge-7", key
        ).done.is_set()
        # a wrong key or a wrong group is refused
        bad = derive_device_key(base64.b64encode(b"x" * 32).decode(), "edge-9")
        with pytest.raises(httpx.HTTPStatusError) as err:
            register(hub.url, "line-1", "edge-9", bad, timeout=60)
        assert err.value.response.status_code == 401
        r = httpx.post(
            f"{hub.url}/registrations/edge-9/register",
            json={"enrollmentGroupId": "line-1"},
            headers={"Authorization": sas_token(key, "line-1/registrations/edge-7")},
            timeout=60,
        )
        assert r.status_code == 401


def _write(tmp_path: Path, text: str, name: str = "agent.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "provisioning: {source: manual, connection_string: 'HostName=h;DeviceId=d'}",
            "lacks SharedAccessKey",
        ),
        ("provisioning: {source: nope}", "provisioning.source"),
        (
            "provisioning: {source: local, manifest: m.json}\nruntime: {type: podman}",
            "runtime.type",
        ),
        (
            "provisioning: {source: local, manifest: m.json}\nreconcile: {interval_secs: 0}",
            "reconcile.interval_secs",
        ),
        (
            "provisioning: {source: dps, global_endpoint: 'http://h', attestation: "
            "{registration_id: d, symmetric_key: k}}",
            "enrollment_group_id",
        ),
        ("provisioning: [unclosed", "not valid YAML"),
        ("provisioning: {source: local, manifest: m.json}\nbogus: 1", "bogus"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_cli_bad_config_exits_2(tmp_path: Path) -> None:
    path = _write(tmp_path, "provisioning: {source: manual}\n")
    r = subprocess.run(
        [sys.executable, "-m", "composition.cli", "agent", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config") and "Traceback" not in r.stderr


def test_json_config_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(
        _write(
            tmp_path,
            '{"provisioning": {"source": "local", "manifest": "m.json"}, "data_dir": "d",'
            ' "runtime": {"type": "process"}}',
            "agent.json",
        )
    )
    assert cfg.data_dir == tmp_path / "d" and cfg.provisioning.manifest == tmp_path / "m.json"
