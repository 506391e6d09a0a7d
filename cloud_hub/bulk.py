"""Bulk registry operations (IoT Hub's ``POST /devices`` with ``importMode`` per item)."""

from __future__ import annotations

from typing import Any

from cloud_hub.errors import HubError, InvalidInput
from cloud_hub.hub import Hub

MAX_ITEMS = 1000
MODES = ("create", "createOrUpdate", "update", "updateIfMatchETag", "delete", "deleteIfMatchETag")
_IDENTITY_KEYS = ("status", "statusReason", "authentication", "capabilities")


def _twin_body(item: dict[str, Any]) -> dict[str, Any] | None:
    props = item.get("properties")
    desired = props.get("desired") if isinstance(props, dict) else None
    if item.get("tags") is None and desired is None:
        return None
    return {"tags": item.get("tags") or {}, "properties": {"desired": desired or {}}}


def bulk_import(hub: Hub, items: Any) -> dict[str, Any]:
    """Apply each item; returns ``{"isSuccessful", "errors", "warnings"}``.

    New devices of ``create``/``createOrUpdate`` are inserted in one transaction (with their
    tags); everything else goes item by item. Errors name the item: ``[index].field``.
    """
    if not isinstance(items, list):
        raise InvalidInput("body must be a JSON array of devices", path="body")
    if len(items) > MAX_ITEMS:
        raise InvalidInput(f"at most {MAX_ITEMS} devices per request", path="body")
    errors: list[dict[str, Any]] = []

    def fail(index: int, device_id: Any, exc: HubError) -> None:
        path = f"[{index}]" + (f".{exc.path}" if exc.path else "")
        errors.append(
            {
                "deviceId": device_id,
                "errorCode": exc.code,
                "errorStatus": exc.message,
                "path": path,
            }
        )

    fresh: list[tuple[int, dict[str, Any]]] = []
    fresh_ids: set[str] = set()
    later: list[tuple[int, dict[str, Any], str]] = []  # repeats of an id created in this batch
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            fail(index, None, InvalidInput("each item needs a string id", path="id"))
            continue
        mode = item.get("importMode", "createOrUpdate")
        if mode not in MODES:
            fail(index, item["id"], InvalidInput(f"unknown importMode {mode!r}", path="importMode"))
            continue
        if item["id"] in fresh_ids:
            later.append((index, item, mode))
            continue
        if mode in ("create", "createOrUpdate") and not hub.registry.device_exists(item["id"]):
            fresh.append((index, item))
            fresh_ids.add(item["id"])
            continue
        try:
            _apply_one(hub, item, mode)
        except HubError as exc:
            fail(index, item["id"], exc)

    if fresh:
        _create_fresh(hub, fresh, fail)
    for index, item, mode in later:
        try:
            _apply_one(hub, item, mode)
        except HubError as exc:
            fail(index, item["id"], exc)
    result: dict[str, Any] = {"isSuccessful": not errors, "errors": errors, "warnings": []}
    if errors:
        first = errors[0]
        result["errorCode"] = "BulkRegistryOperationFailure"
        result["message"] = (
            f"{len(errors)} of {len(items)} items failed; first: {first['path']}: "
            f"{first['errorStatus']}"
        )
        result["path"] = first["path"]
    return result


def _apply_one(hub: Hub, item: dict[str, Any], mode: str) -> None:
    device_id = item["id"]
    etag = item.get("eTag") if mode.endswith("IfMatchETag") else "*"
    if mode.startswith("delete"):
        hub.registry.delete_device(device_id, etag)
        return
    if mode == "create":
        hub.registry.create_device(device_id, _identity(item))
    else:
        hub.registry.update_device(device_id, _identity(item), etag)
    twin = _twin_body(item)
    if twin is not None:
        hub.twins.replace_twin(device_id, None, twin)


def _identity(item: dict[str, Any]) -> dict[str, Any]:
    return {k: item[k] for k in _IDENTITY_KEYS if item.get(k) is not None}


def _create_fresh(hub: Hub, fresh: list[tuple[int, dict[str, Any]]], fail: Any) -> None:
    batch = [(item["id"], _identity(item), item.get("tags") or {}) for _i, item in fresh]
    try:
        hub.registry.create_devices(batch)
    except HubError:
        # one bad item: create them one by one to report exactly which
        for index, item in fresh:
            try:
                hub.registry.create_device(item["id"], _identity(item))
                twin = _twin_body(item)
                if twin is not None:
                    hub.twins.replace_twin(item["id"], None, twin)
            except HubError as exc:
                fail(index, item["id"], exc)
        return
    for index, item in fresh:
        props = item.get("properties")
        desired = props.get("desired") if isinstance(props, dict) else None
        if desired:
            try:
                hub.twins.patch_desired(item["id"], None, desired)
            except HubError as exc:
                fail(index, item["id"], exc)
