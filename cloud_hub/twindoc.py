"""Twin documents: JSON merge-patch with per-node ``$metadata``, and IoT Hub's limits."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from cloud_hub.errors import InvalidInput
from edgefleet.utctime import utc_text

# IoT Hub's documented twin limits.
MAX_TAGS_BYTES = 8 * 1024
MAX_PROPERTIES_BYTES = 32 * 1024
MAX_DEPTH = 10
MAX_KEY_BYTES = 1024
MAX_STRING_BYTES = 4 * 1024
_FORBIDDEN_KEY_CHARS = frozenset(".$ ")


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a trailing Z and microseconds, as IoT Hub prints twin times."""
    return None if moment is None else utc_text(moment, "microseconds")


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def validate_patch(patch: Any, path: str, *, allow_null: bool = True) -> None:
    """Check a tags/desired/reported patch: an object with valid keys, values and depth."""
    if not isinstance(patch, dict):
        raise InvalidInput(f"{path} must be a JSON object", path=path)
    _validate_object(patch, path, 1, allow_null)


def _validate_object(obj: dict[str, Any], path: str, depth: int, allow_null: bool) -> None:
    if depth > MAX_DEPTH:
        raise InvalidInput(f"{path} is nested deeper than {MAX_DEPTH} levels", path=path)
    for key, value in obj.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"{path} has an empty key", path=path)
        child = f"{path}.{key}"
        if len(key.encode()) > MAX_KEY_BYTES:
            raise InvalidInput(f"key longer than {MAX_KEY_BYTES} bytes at {path}", path=path)
        if any(c in _FORBIDDEN_KEY_CHARS or ord(c) < 32 or ord(c) == 127 for c in key):
            raise InvalidInput(
                f"invalid key {key!r} at {path}: keys may not contain '.', '$', spaces or "
                "control characters",
                path=child,
            )
        _validate_value(value, child, depth, allow_null)


def _validate_value(value: Any, path: str, depth: int, allow_null: bool) -> None:
    if value is None:
        if not allow_null:
            raise InvalidInput(f"{path}: null is not allowed here", path=path)
    elif isinstance(value, dict):
        _validate_object(value, path, depth + 1, allow_null)
    elif isinstance(value, list):
        if depth + 1 > MAX_DEPTH:
            raise InvalidInput(f"{path} is nested deeper than {MAX_DEPTH} levels", path=path)
        for index, item in enumerate(value):
            if isinstance(item, dict):
                _validate_object(item, f"{path}[{index}]", depth + 1, False)
            else:
                _validate_value(item, f"{path}[{index}]", depth + 1, False)
    elif isinstance(value, str):
        if "\x00" in value:
            raise InvalidInput(f"{path}: strings may not contain NUL characters", path=path)
        if len(value.encode()) > MAX_STRING_BYTES:
            raise InvalidInput(f"{path}: string longer than {MAX_STRING_BYTES} bytes", path=path)
    elif isinstance(value, bool | int | float):
        if isinstance(value, float) and value != value:  # NaN is not JSON
            raise InvalidInput(f"{path}: not a JSON number", path=path)
    else:
        raise InvalidInput(f"{path}: unsupported value type {type(value).__name__}", path=path)


def check_size(doc: dict[str, Any], path: str, limit: int) -> None:
    size = json_size(doc)
    if size > limit:
        raise InvalidInput(f"{path} is {size} bytes; the limit is {limit} bytes", path=path)


def merge_patch(
    doc: dict[str, Any],
    meta: dict[str, Any],
    patch: dict[str, Any],
    now: str,
    version: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply a JSON merge patch; returns new (doc, metadata) without touching the inputs."""
    new_doc = json_copy(doc)
    new_meta = json_copy(meta)
    _merge(new_doc, new_meta, patch, now, version)
    return new_doc, new_meta


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists and scalars only): several times cheaper than
    ``copy.deepcopy``, which also keeps a memo for shared and cyclic objects JSON cannot have."""
    if isinstance(value, dict):
        return {key: json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_copy(item) for item in value]
    return value


def _stamp(meta: dict[str, Any], now: str, version: int) -> None:
    meta["$lastUpdated"] = now
    meta["$lastUpdatedVersion"] = version


def _merge(
    doc: dict[str, Any], meta: dict[str, Any], patch: dict[str, Any], now: str, version: int
) -> None:
    for key, value in patch.items():
        if value is None:
            doc.pop(key, None)
            meta.pop(key, None)
        elif isinstance(value, dict):
            if not isinstance(doc.get(key), dict):
                doc[key] = {}
                meta[key] = {}
            child_meta = meta.get(key)
            if not isinstance(child_meta, dict):
                child_meta = meta[key] = {}
            _merge(doc[key], child_meta, value, now, version)
        else:
            doc[key] = json_copy(value)
            meta[key] = {}
            _stamp(meta[key], now, version)
    _stamp(meta, now, version)


def build_metadata(doc: dict[str, Any], now: str, version: int) -> dict[str, Any]:
    """Metadata for a whole document written at once (twin replace)."""
    meta: dict[str, Any] = {}
    for key, value in doc.items():
        meta[key] = build_metadata(value, now, version) if isinstance(value, dict) else {}
        if not isinstance(value, dict):
            _stamp(meta[key], now, version)
    _stamp(meta, now, version)
    return meta


def strip_nulls(doc: dict[str, Any]) -> dict[str, Any]:
    """A replacement document stores no nulls (they would mean 'delete' in a patch)."""
    return {
        k: strip_nulls(v) if isinstance(v, dict) else v for k, v in doc.items() if v is not None
    }


def replacement_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch that turns ``old`` into ``new`` (top level; nulls for removed keys)."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    patch.update(new)
    return patch
