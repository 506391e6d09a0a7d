"""Enrollment groups, registrations and log uploads in the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import json
import os
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from cloud_hub import logstore
from cloud_hub.app import create_app
from cloud_hub.enrollments import RegistrationRefused, derive_device_key
from cloud_hub.errors import DeviceNotFound, HubError, InvalidInput, NotFound
from cloud_hub.hub import Hub, open_hub
from cloud_hub.logstore import UploadRefused
from cloud_hub.models import LogUploadTokenRow
from edge_agent.provisioning import register, sas_token
from edgefleet.utctime import utc_now
from tests.support.hub import running_hub
from tests.support.pg import temporary_database

GROUP_KEY = base64.b64encode(b"group-key-0123456789abcdef012345").decode()


def _group(status: str = "enabled", edge: bool = True) -> dict[str, Any]:
    return {
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": GROUP_KEY}},
        "capabilities": {"iotEdge": edge},
        "provisioningStatus": status,
    }


def _register(hub: Hub, registration_id: str, group_id: str = "line-1") -> dict[str, Any]:
    key = derive_device_key(GROUP_KEY, registration_id)
    token = sas_token(key, f"{group_id}/registrations/{registration_id}")
    return hub.enrollments.register(registration_id, group_id, token)


@pytest.fixture
def second(hub: Hub) -> Iterator[Hub]:
    """Another Hub object (another hub process's services) on the same database."""
    other = open_hub(hub.settings)
    try:
        yield other
    finally:
        other.close()


def test_group_is_stored_and_keys_generated(hub: Hub) -> None:
    group = hub.enrollments.put_group("g1", {})
    keys = group["attestation"]["symmetricKey"]
    assert len(base64.b64decode(keys["primaryKey"])) == 32
    assert keys["primaryKey"] != keys["secondaryKey"]
    assert group["provisioningStatus"] == "enabled"
    assert group["capabilities"] == {"iotEdge": False}
    assert hub.enrollments.get_group("g1")["attestation"] == group["attestation"]
    replaced = hub.enrollments.put_group("g1", _group())
    assert replaced["attestation"]["symmetricKey"]["primaryKey"] == GROUP_KEY
    assert hub.enrollments.get_group("g1")["capabilities"] == {"iotEdge": True}
    assert replaced["createdDateTimeUtc"] == group["createdDateTimeUtc"]
    hub.enrollments.delete_group("g1")
    with pytest.raises(NotFound):
        hub.enrollments.get_group("g1")


def test_group_created_on_one_hub_is_seen_by_another(hub: Hub, second: Hub) -> None:
    hub.enrollments.put_group("line-1", _group())
    assert second.enrollments.get_group("line-1")["attestation"]["symmetricKey"]["primaryKey"] == (
        GROUP_KEY
    )
    # a device registers through the second hub; the first hub sees device and registration
    assert _register(second, "edge-7")["status"] == "assigned"
    assert hub.registry.get_device("edge-7")["capabilities"]["iotEdge"] is True
    assert hub.enrollments.get_registration("edge-7")["enrollmentGroupId"] == "line-1"
    # disabling on the first hub is seen at once by the second
    hub.enrollments.put_group("line-1", _group(status="disabled"))
    with pytest.raises(RegistrationRefused):
        _register(second, "edge-8")


def test_reregistration_is_idempotent(hub: Hub) -> None:
    hub.enrollments.put_group("line-1", _group())
    first = _register(hub, "edge-7")
    device = hub.registry.get_device("edge-7")
    again = _register(hub, "edge-7")
    assert first["status"] == again["status"] == "assigned"
    assert again["deviceId"] == "edge-7" and again["registrationCount"] == 2
    after = hub.registry.get_device("edge-7")
    assert after["generationId"] == device["generationId"] and after["etag"] == device["etag"]
    key = derive_device_key(GROUP_KEY, "edge-7")
    assert hub.registry.authenticate("edge-7", key)
    assert [r["registrationId"] for r in hub.enrollments.list_registrations("line-1")] == ["edge-7"]


def test_disabled_group_refuses_registration(hub: Hub) -> None:
    hub.enrollments.put_group("line-1", _group(status="disabled"))
    with pytest.raises(RegistrationRefused) as err:
        _register(hub, "edge-7")
    assert err.value.status == 401
    assert not hub.registry.device_exists("edge-7")
    hub.enrollments.put_group("line-1", _group())
    assert _register(hub, "edge-7")["status"] == "assigned"


def test_wrong_key_unknown_group_and_foreign_device_are_refused(hub: Hub) -> None:
    hub.enrollments.put_group("line-1", _group())
    other_key = derive_device_key(base64.b64encode(b"x" * 32).decode(), "edge-9")
    with pytest.raises(RegistrationRefused):
        hub.enrollments.register(
            "edge-9", "line-1", sas_token(other_key, "line-1/registrations/edge-9")
        )
    with pytest.raises(RegistrationRefused):  # a token for another registration id
        key = derive_device_key(GROUP_KEY, "edge-7")
        hub.enrollments.register("edge-9", "line-1", sas_token(key, "line-1/registrations/edge-7"))
    with pytest.raises(RegistrationRefused):
        _register(hub, "edge-9", group_id="nope")
    hub.registry.create_device("taken")  # exists with its own random keys
    with pytest.raises(RegistrationRefused):
        _register(hub, "taken")
    with pytest.raises(NotFound):
        hub.enrollments.get_registration("edge-9")


@pytest.mark.parametrize(
    ("group_id", "body", "path"),
    [
        ("bad id", {}, "enrollmentGroupId"),
        ("g", {"attestation": "x"}, "attestation"),
        ("g", {"attestation": {"type": "x509"}}, "attestation.type"),
        ("g", {"attestation": {"symmetricKey": []}}, "attestation.symmetricKey"),
        (
            "g",
            {"attestation": {"symmetricKey": {"primaryKey": "not base64!"}}},
            "attestation.symmetricKey.primaryKey",
        ),
        (
            "g",
            {"attestation": {"symmetricKey": {"secondaryKey": "c2hvcnQ="}}},
            "attestation.symmetricKey.secondaryKey",
        ),
        ("g", {"capabilities": {"iotEdge": "yes"}}, "capabilities.iotEdge"),
        ("g", {"capabilities": 3}, "capabilities"),
        ("g", {"provisioningStatus": "paused"}, "provisioningStatus"),
    ],
)
def test_bad_group_input_names_the_field(
    hub: Hub, group_id: str, body: dict[str, Any], path: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        hub.enrollments.put_group(group_id, body)
    assert err.value.path == path
    with TestClient(create_app(hub=hub)) as client:
        token = hub.tokens.create(["registry:write"])
        r = client.put(
            f"/enrollmentGroups/{group_id}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
    assert r.status_code == 400 and r.json()["path"] == path, r.text


def test_bad_registration_input_names_the_field(hub: Hub) -> None:
    with pytest.raises(InvalidInput) as err:
        hub.enrollments.register("edge 7", "line-1", "")
    assert err.value.path == "registrationId"
    with pytest.raises(InvalidInput) as err:
        hub.enrollments.register("edge-7", 5, "")
    assert err.value.path == "enrollmentGroupId"


def test_groups_from_the_legacy_json_file_are_imported(hub: Hub) -> None:
    legacy = {"old": _group(), "bad id": _group()}
    (hub.settings.data_dir / "enrollment-groups.json").write_text(json.dumps(legacy))
    again = open_hub(hub.settings)
    try:
        assert again.enrollments.get_group("old")["capabilities"] == {"iotEdge": True}
        with pytest.raises(NotFound):
            again.enrollments.get_group("bad id")
    finally:
        again.close()
    assert not (hub.settings.data_dir / "enrollment-groups.json").exists()
    assert (hub.settings.data_dir / "enrollment-groups.json.imported").exists()


def test_log_upload_roundtrip_across_hubs(hub: Hub, second: Hub) -> None:
    hub.registry.create_device("edge-1")
    token = hub.log_uploads.new_token("edge-1")
    with hub.db.read() as session:
        stored = session.scalars(select(LogUploadTokenRow.token_hash)).all()
    assert len(stored) == 1 and token not in stored[0]  # only a digest is kept
    stored_one = second.log_uploads.store(token, "talker", b'[{"msg":"one"}]')
    stored_two = second.log_uploads.store(token, "talker", b"\x1f\x8b" + b"gz")
    assert stored_two["name"].endswith(".json.gz") and stored_one["name"].endswith(".json")
    listing = hub.log_uploads.uploads("edge-1")
    assert [(i["module"], i["bytes"]) for i in listing] == [("talker", 15), ("talker", 4)]
    assert hub.log_uploads.read("edge-1", stored_one["name"]) == b'[{"msg":"one"}]'
    with pytest.raises(NotFound):
        hub.log_uploads.read("edge-2", stored_one["name"])
    assert hub.log_uploads.uploads("edge-2") == []


def test_log_upload_refusals(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DeviceNotFound):
        hub.log_uploads.new_token("ghost")
    hub.registry.create_device("edge-1")
    token = hub.log_uploads.new_token("edge-1")
    with pytest.raises(UploadRefused):
        hub.log_uploads.store("nope", "talker", b"x")
    with pytest.raises(InvalidInput) as err:
        hub.log_uploads.store(token, "../etc", b"x")
    assert err.value.path == "module"
    monkeypatch.setattr(logstore, "MAX_BYTES", 4)
    with pytest.raises(HubError) as too_big:
        hub.log_uploads.store(token, "talker", b"12345")
    assert too_big.value.status == 413
    with hub.db.write() as session:  # the hour is over
        session.execute(update(LogUploadTokenRow).values(expires_at=utc_now() - timedelta(1)))
    with pytest.raises(UploadRefused):
        hub.log_uploads.store(token, "talker", b"x")


def test_deleting_the_device_removes_its_logs_and_tokens(hub: Hub) -> None:
    hub.registry.create_device("edge-1")
    token = hub.log_uploads.new_token("edge-1")
    hub.log_uploads.store(token, "talker", b"[]")
    hub.registry.delete_device("edge-1")
    with pytest.raises(UploadRefused):
        hub.log_uploads.store(token, "talker", b"[]")
    hub.registry.create_device("edge-1")
    assert hub.log_uploads.uploads("edge-1") == []


def test_two_hub_processes_and_kill_9(tmp_path: Path) -> None:
    """Group on hub A, registration and log upload through hub B, all survive A's SIGKILL."""
    with (
        temporary_database() as url,
        running_hub(tmp_path / "a", database_url=url) as hub_a,
        running_hub(tmp_path / "b", database_url=url) as hub_b,
    ):
        auth_a = {"Authorization": f"Bearer {hub_a.token}"}
        auth_b = {"Authorization": f"Bearer {hub_b.token}"}
        r = httpx.put(
            f"{hub_a.url}/enrollmentGroups/line-1", json=_group(), headers=auth_a, timeout=60
        )
        assert r.status_code == 200, r.text
        key = derive_device_key(GROUP_KEY, "edge-7")
        assert register(hub_b.url, "line-1", "edge-7", key, timeout=60)["deviceId"] == "edge-7"
        assert register(hub_a.url, "line-1", "edge-7", key, timeout=60)["status"] == "assigned"
        sas_url = httpx.post(
            f"{hub_b.url}/devices/edge-7/logUploads", headers=auth_b, timeout=60
        ).json()
        put = httpx.put(
            sas_url["sasUrl"].replace(hub_b.url, hub_a.url),
            params={"module": "m"},
            content=b"[1]",
            timeout=60,
        )
        assert put.status_code == 201, put.text
        os.kill(hub_a.process.pid, signal.SIGKILL)
        hub_a.process.wait(10)
        regs = httpx.get(
            f"{hub_b.url}/enrollmentGroups/line-1/registrations", headers=auth_b, timeout=60
        )
        assert [(r["registrationId"], r["registrationCount"]) for r in regs.json()] == [
            ("edge-7", 2)
        ]
        (item,) = httpx.get(
            f"{hub_b.url}/devices/edge-7/logUploads", headers=auth_b, timeout=60
        ).json()
        got = httpx.get(
            f"{hub_b.url}/devices/edge-7/logUploads/{item['name']}", headers=auth_b, timeout=60
        )
        assert got.content == b"[1]"
        with running_hub(tmp_path / "a", database_url=url) as again:
            group = httpx.get(
                f"{again.url}/enrollmentGroups/line-1",
                headers={"Authorization": f"Bearer {again.token}"},
                timeout=60,
            ).json()
            assert group["attestation"]["symmetricKey"]["primaryKey"] == GROUP_KEY
