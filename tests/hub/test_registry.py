"""Device and module identities through the service layer (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from cloud_hub import events
from cloud_hub.errors import (
    AlreadyExists,
    DeviceNotFound,
    InvalidInput,
    ModuleNotFound,
    PreconditionFailed,
)
from cloud_hub.hub import Hub

THUMB = "A" * 40


def _record(hub: Hub) -> list[Any]:
    seen: list[Any] = []
    hub.events.subscribe((object,), seen.append)
    return seen


def test_create_generates_keys_and_defaults(hub: Hub) -> None:
    seen = _record(hub)
    device = hub.registry.create_device("cam-1")
    keys = device["authentication"]["symmetricKey"]
    assert device["authentication"]["type"] == "sas"
    assert len(base64.b64decode(keys["primaryKey"])) == 32
    assert keys["primaryKey"] != keys["secondaryKey"]
    assert device["status"] == "enabled"
    assert device["connectionState"] == "Disconnected"
    assert device["capabilities"] == {"iotEdge": False}
    assert device["etag"] and device["generationId"]
    assert hub.registry.get_device("cam-1") == device
    assert seen == [events.DeviceCreated("cam-1", device)]


def test_given_keys_and_thumbprints_are_kept(hub: Hub) -> None:
    key = base64.b64encode(b"k" * 32).decode()
    device = hub.registry.create_device(
        "d1", {"authentication": {"symmetricKey": {"primaryKey": key}}}
    )
    assert device["authentication"]["symmetricKey"]["primaryKey"] == key
    x509 = hub.registry.create_device(
        "d2",
        {"authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": THUMB}}},
    )
    assert x509["authentication"]["x509Thumbprint"]["primaryThumbprint"] == THUMB
    assert x509["authentication"]["symmetricKey"]["primaryKey"] is None
    with pytest.raises(InvalidInput) as bad:
        hub.registry.create_device(
            "d3", {"authentication": {"symmetricKey": {"primaryKey": "not base64!"}}}
        )
    assert bad.value.path == "authentication.symmetricKey.primaryKey"
    with pytest.raises(InvalidInput) as missing:
        hub.registry.create_device("d4", {"authentication": {"type": "selfSigned"}})
    assert missing.value.path == "authentication.x509Thumbprint.primaryThumbprint"


def test_invalid_ids_and_duplicates(hub: Hub) -> None:
    for bad_id in ("", "a/b", "x" * 129, "sp ace", "#"):
        with pytest.raises(InvalidInput):
            hub.registry.create_device(bad_id)
    hub.registry.create_device("dup")
    with pytest.raises(AlreadyExists):
        hub.registry.create_device("dup")
    with pytest.raises(InvalidInput) as mismatch:
        hub.registry.create_device("a", {"deviceId": "b"})
    assert mismatch.value.path == "deviceId"


def test_edge_device_gets_system_modules_and_twins(hub: Hub) -> None:
    seen = _record(hub)
    hub.registry.create_device("edge-1", {"capabilities": {"iotEdge": True}})
    modules = [m["moduleId"] for m in hub.registry.list_modules("edge-1")]
    assert modules == ["$edgeAgent", "$edgeHub"]
    twin = hub.twins.get_twin("edge-1", "$edgeAgent")
    assert twin["moduleId"] == "$edgeAgent"
    assert twin["properties"]["desired"]["$version"] == 1
    created = [e.module_id for e in seen if isinstance(e, events.ModuleCreated)]
    assert created == ["$edgeAgent", "$edgeHub"]


def test_update_needs_matching_etag(hub: Hub) -> None:
    device = hub.registry.create_device("d1")
    seen = _record(hub)
    with pytest.raises(PreconditionFailed):
        hub.registry.update_device("d1", {"status": "disabled"}, if_match='"stale"')
    updated = hub.registry.update_device(
        "d1", {"status": "disabled", "statusReason": "stolen"}, if_match=f'"{device["etag"]}"'
    )
    assert updated["status"] == "disabled" and updated["statusReason"] == "stolen"
    assert updated["etag"] != device["etag"]
    # keys are kept when the update does not name them
    assert updated["authentication"] == device["authentication"]
    (event,) = seen
    assert isinstance(event, events.DeviceUpdated)
    assert event.status_changed and not event.credentials_changed
    # `*` matches any etag; enabling iotEdge later adds the system modules
    hub.registry.update_device("d1", {"capabilities": {"iotEdge": True}}, if_match="*")
    assert len(hub.registry.list_modules("d1")) == 2
    with pytest.raises(DeviceNotFound):
        hub.registry.update_device("ghost", {}, if_match="*")


def test_rotate_key_and_authenticate(hub: Hub) -> None:
    device = hub.registry.create_device("d1")
    old = device["authentication"]["symmetricKey"]
    assert hub.registry.authenticate("d1", old["primaryKey"])
    assert hub.registry.authenticate("d1", old["secondaryKey"])
    assert not hub.registry.authenticate("d1", "wrong")
    assert not hub.registry.authenticate("ghost", old["primaryKey"])
    seen = _record(hub)
    rotated = hub.registry.rotate_key("d1", "primary")
    new = rotated["authentication"]["symmetricKey"]
    assert new["primaryKey"] != old["primaryKey"] and new["secondaryKey"] == old["secondaryKey"]
    assert not hub.registry.authenticate("d1", old["primaryKey"])
    assert isinstance(seen[0], events.DeviceUpdated) and seen[0].credentials_changed
    swapped = hub.registry.rotate_key("d1", "swap")["authentication"]["symmetricKey"]
    assert swapped == {"primaryKey": new["secondaryKey"], "secondaryKey": new["primaryKey"]}
    # a disabled device cannot authenticate
    hub.registry.update_device("d1", {"status": "disabled"}, if_match="*")
    assert not hub.registry.authenticate("d1", swapped["primaryKey"])


def test_list_pages_by_continuation(hub: Hub) -> None:
    for i in range(7):
        hub.registry.create_device(f"dev-{i}")
    seen: list[str] = []
    token = None
    while True:
        page, token = hub.registry.list_devices(3, token)
        seen += [d["deviceId"] for d in page]
        if token is None:
            break
    assert seen == [f"dev-{i}" for i in range(7)]
    with pytest.raises(InvalidInput):
        hub.registry.list_devices(3, "%%%not-a-token")
    with pytest.raises(InvalidInput):
        hub.registry.list_devices(0)


def test_modules_crud_and_cascading_delete(hub: Hub) -> None:
    hub.registry.create_device("d1")
    module = hub.registry.create_module("d1", "camera", {"managedBy": "me"})
    assert module["moduleId"] == "camera" and module["managedBy"] == "me"
    assert module["authentication"]["symmetricKey"]["primaryKey"]
    with pytest.raises(AlreadyExists):
        hub.registry.create_module("d1", "camera")
    with pytest.raises(InvalidInput):
        hub.registry.create_module("d1", "$mine")
    with pytest.raises(DeviceNotFound):
        hub.registry.create_module("ghost", "camera")
    assert hub.twins.get_twin("d1", "camera")["moduleId"] == "camera"
    assert hub.registry.authenticate(
        "d1", module["authentication"]["symmetricKey"]["primaryKey"], module_id="camera"
    )
    with pytest.raises(PreconditionFailed):
        hub.registry.delete_module("d1", "camera", if_match="nope")
    hub.registry.delete_module("d1", "camera", if_match=module["etag"])
    with pytest.raises(ModuleNotFound):
        hub.twins.get_twin("d1", "camera")

    hub.registry.create_module("d1", "other")
    seen = _record(hub)
    hub.registry.delete_device("d1")
    assert seen == [events.DeviceDeleted("d1")]
    with pytest.raises(DeviceNotFound):
        hub.registry.get_device("d1")
    with pytest.raises(DeviceNotFound):
        hub.twins.get_twin("d1")
    # the id is free again, with no leftovers
    hub.registry.create_device("d1")
    assert hub.registry.list_modules("d1") == []


def test_connection_state_and_identities(hub: Hub) -> None:
    hub.registry.create_device("d1", {"capabilities": {"iotEdge": True}})
    hub.registry.create_device("d2", {"status": "disabled"})
    seen = _record(hub)
    hub.registry.set_connection_state("d1", True)
    device = hub.registry.get_device("d1")
    assert device["connectionState"] == "Connected" and device["lastActivityTime"]
    assert hub.twins.get_twin("d1")["connectionState"] == "Connected"
    assert seen == [events.ConnectionStateChanged("d1", None, True)]
    hub.registry.set_connection_state("d1", True, module_id="$edgeAgent")
    assert hub.registry.get_module("d1", "$edgeAgent")["connectionState"] == "Connected"
    idents = {(i.device_id, i.module_id): i for i in hub.registry.identities()}
    assert set(idents) == {("d1", None), ("d1", "$edgeAgent"), ("d1", "$edgeHub"), ("d2", None)}
    assert idents[("d1", None)].enabled and not idents[("d2", None)].enabled


def test_update_keeps_fields_the_body_leaves_out(hub: Hub) -> None:
    hub.registry.create_device("d1", {"status": "disabled", "statusReason": "maintenance"})
    updated = hub.registry.update_device("d1", {"capabilities": {"iotEdge": True}}, if_match="*")
    assert updated["status"] == "disabled" and updated["statusReason"] == "maintenance"
    assert updated["capabilities"]["iotEdge"] is True
    enabled = hub.registry.update_device("d1", {"status": "enabled"}, if_match="*")
    assert enabled["status"] == "enabled" and enabled["statusReason"] == "maintenance"
