"""The shared access policy store on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from azure.iot.hub.sastoken import SasToken

from cloud_hub.errors import AlreadyExists, InvalidInput, NotFound
from cloud_hub.hub import Hub, open_hub
from cloud_hub.policies import AccessPolicies
from cloud_hub.settings import HubSettings
from edgefleet import sas
from edgefleet.sas import SasRejected


def test_a_new_hub_has_iot_hubs_four_policies_with_distinct_32_byte_keys(tmp_path: Path) -> None:
    hub = open_hub(HubSettings(data_dir=tmp_path / "hub"))
    try:
        policies = {p.name: p for p in hub.policies.list()}
    finally:
        hub.close()
    assert {name: set(p.scopes) for name, p in policies.items()} == {
        "iothubowner": {"admin"},
        "service": {"service", "deploy"},
        "registryRead": {"registry:read"},
        "registryReadWrite": {"registry:read", "registry:write"},
    }
    keys = [k for p in policies.values() for k in (p.primary_key, p.secondary_key)]
    assert len(set(keys)) == 8
    assert all(len(base64.b64decode(k, validate=True)) == 32 for k in keys)


def test_create_rotate_and_swap(hub: Hub) -> None:
    created = hub.policies.create("ops", frozenset({"registry:read", "service"}))
    assert hub.policies.get("ops") == created
    with pytest.raises(AlreadyExists):
        hub.policies.create("ops", frozenset({"admin"}))
    with pytest.raises(InvalidInput):
        hub.policies.create("bad&name", frozenset({"admin"}))

    rotated = hub.policies.rotate("ops", "primary")
    assert rotated.primary_key != created.primary_key
    assert rotated.secondary_key == created.secondary_key
    swapped = hub.policies.rotate("ops", "swap")
    assert (swapped.primary_key, swapped.secondary_key) == (
        rotated.secondary_key,
        rotated.primary_key,
    )
    assert hub.policies.load()["ops"] == swapped
    with pytest.raises(NotFound):
        hub.policies.rotate("nobody", "primary")
    with pytest.raises(InvalidInput):
        hub.policies.rotate("ops", "tertiary")


def test_verified_signatures_are_remembered_until_the_keys_change(hub: Hub) -> None:
    ops = hub.policies.create("ops", frozenset({"admin"}))
    store = AccessPolicies(hub.db, frozenset({"hub.test"}))
    token = str(SasToken("hub.test/devices", ops.primary_key, "ops")).split(" ", 1)[1]
    store.load()
    for _ in range(2):  # the second time from the remembered signature
        assert store.verify(token, 0, "/devices").name == "ops"
    hub.policies.rotate("ops", "primary")
    assert store.verify(token, 0, "/devices").name == "ops"  # until reloaded
    with pytest.raises(SasRejected, match="another resource"):
        store.verify(token, 0, "/twins/x")  # a remembered token is still checked for its path
    expiry = int(sas.parse(token).expiry)
    with pytest.raises(SasRejected, match="expired"):
        store.verify(token, expiry, "/devices")  # and its expiry
    store.load()
    with pytest.raises(SasRejected, match="match"):
        store.verify(token, 0, "/devices")
