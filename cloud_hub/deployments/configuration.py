"""IoT Hub configuration bodies: validation of ``PUT /configurations/{id}`` and the answer JSON.

A configuration is IoT Hub's automatic deployment: ``content`` (``modulesContent`` for an edge
deployment, ``deviceContent`` / ``moduleContent`` for device or module twin configurations),
``targetCondition`` (the query language over device twins), ``priority``, ``labels`` and
``metrics.queries``. Content never changes after creation, as in IoT Hub; everything else may.
``systemMetrics.queries`` are IoT Hub's own and derived from the id, so a body cannot change them.

The optional ``rollout`` object (staged rollout, an edgefleet extension) is kept apart: a body
without it leaves a stored rollout alone.

Everything here is pure: the store calls ``parse_body`` and ``configuration_json``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloud_hub.deployments.rollout import RolloutSpec, RolloutSpecError, parse_rollout
from cloud_hub.errors import InvalidInput
from cloud_hub.query import QueryError, parse_condition, parse_query
from edgefleet.deployment_check import check_configuration_content, content_kind

_ID_RE = re.compile(r"^[a-z0-9\-:+%_#*?!(),=@;$']{1,128}$")
MAX_LABELS = 100
MAX_METRICS = 20
_BODY_KEYS = {
    "id",
    "schemaVersion",
    "labels",
    "content",
    "targetCondition",
    "priority",
    "metrics",
    "systemMetrics",
    "createdTimeUtc",
    "lastUpdatedTimeUtc",
    "etag",
    "contentType",
    "rollout",
    "rolloutStatus",
}


@dataclass(frozen=True)
class ConfigurationBody:
    """A validated PUT body; ``rollout_given`` tells an absent rollout from ``"rollout": null``."""

    config_id: str
    schema_version: str
    labels: dict[str, str]
    content: dict[str, Any]
    kind: str  # "modules" | "device" | "module"
    layered: bool
    target_condition: str
    priority: int
    metric_queries: dict[str, str]
    rollout: RolloutSpec | None
    rollout_given: bool

    @property
    def content_hash(self) -> str:
        return content_hash(self.content)


def content_hash(content: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a content: equal contents, equal hashes."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_config_id(config_id: str) -> str:
    """IoT Hub's configuration ids: lower case letters, digits and ``-:+%_#*?!(),=@;$'``."""
    if not _ID_RE.match(config_id):
        raise InvalidInput(
            f"invalid configuration id {config_id!r}: 1-128 lower-case ASCII letters, digits or "
            "-:+%_#*?!(),=@;$'",
            path="id",
        )
    return config_id


def system_metric_queries(config_id: str, target_condition: str, kind: str) -> dict[str, str]:
    """IoT Hub's system metric queries of a configuration (what ``systemMetrics.queries`` shows)."""
    where = f" AND ({target_condition})" if target_condition.strip() else ""
    if kind != "modules":
        collection = "devices" if kind == "device" else "devices.modules"
        condition = target_condition or "true"
        return {
            "targetedCount": f"SELECT deviceId FROM {collection} WHERE {condition}",
            "appliedCount": (
                f"SELECT deviceId FROM {collection} WHERE configurations.[[{config_id}]].status "
                "= 'Applied'"
            ),
        }
    applied = (
        "SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' AND "
        f"configurations.[[{config_id}]].status = 'Applied'"
    )
    reported = " AND properties.desired.$version = properties.reported.lastDesiredVersion"
    return {
        "targetedCount": f"SELECT deviceId FROM devices WHERE capabilities.iotEdge = true{where}",
        "appliedCount": applied,
        "reportedSuccessfulCount": (
            applied + reported + " AND properties.reported.lastDesiredStatus.code = 200"
        ),
        "reportedFailedCount": (
            applied + reported + " AND properties.reported.lastDesiredStatus.code != 200"
        ),
    }


def condition_error(text: str) -> str:
    """'' when ``text`` is a valid target condition, else the parser's message with position."""
    if not text.strip():
        return ""
    try:
        parse_condition(text)
    except QueryError as exc:
        return str(exc)
    return ""


def metric_query_error(text: Any) -> str:
    """'' when ``text`` is a valid metric query (a SELECT over devices or modules)."""
    if not isinstance(text, str) or not text.strip():
        return "a metric query must be a non-empty string"
    try:
        parse_query(text)
    except QueryError as exc:
        return str(exc)
    return ""


def _object(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{path} must be a JSON object", path=path)
    return value


def _labels(value: Any) -> dict[str, str]:
    labels = _object(value, "labels")
    if len(labels) > MAX_LABELS:
        raise InvalidInput(f"at most {MAX_LABELS} labels", path="labels")
    for key, label in labels.items():
        if not isinstance(label, str):
            raise InvalidInput("label values must be strings", path=f"labels.{key}")
    return dict(labels)


def _metric_queries(value: Any) -> dict[str, str]:
    metrics = _object(value, "metrics")
    queries = _object(metrics.get("queries"), "metrics.queries")
    if len(queries) > MAX_METRICS:
        raise InvalidInput(f"at most {MAX_METRICS} custom metrics", path="metrics.queries")
    for name, text in queries.items():
        error = metric_query_error(text)
        if error:
            raise InvalidInput(error, path=f"metrics.queries.{name}")
    return dict(queries)


def _priority(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput("priority must be a non-negative integer", path="priority")
    return value


def _content(value: Any) -> tuple[dict[str, Any], str, bool]:
    raw = _object(value, "content")
    content = {k: v for k, v in raw.items() if v not in (None, {})}
    if not content:
        raise InvalidInput(
            "content needs modulesContent, deviceContent or moduleContent", path="content"
        )
    if len(content) > 1:
        raise InvalidInput(
            "content holds one of modulesContent, deviceContent, moduleContent",
            path="content",
        )
    try:
        kind = content_kind(content)
    except ValueError as exc:
        raise InvalidInput(str(exc), path="content") from None
    layered = kind == "modules" and is_layered(content)
    verdict = check_configuration_content(content, layered=layered)
    if not verdict.valid:
        first = verdict.errors[0]
        more = f" (and {len(verdict.errors) - 1} more errors)" if len(verdict.errors) > 1 else ""
        raise InvalidInput(first.message + more, path=f"content.{first.path}".rstrip("."))
    return content, kind, layered


def is_layered(content: Mapping[str, Any]) -> bool:
    """A layered edge deployment sets dotted paths (``properties.desired.modules.x``)."""
    modules = content.get("modulesContent") or content.get("moduleContent") or {}
    if not isinstance(modules, Mapping):
        return False
    for section in modules.values():
        if isinstance(section, Mapping) and any(
            isinstance(k, str) and k.startswith("properties.desired.") for k in section
        ):
            return True
    return False


def parse_body(config_id: str, body: Any, *, creating: bool) -> ConfigurationBody:
    """Validate a PUT body (InvalidInput with the JSON path); content is checked on create only."""
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object", path="body")
    check_config_id(config_id)
    unknown = sorted(set(body) - _BODY_KEYS)
    if unknown:
        raise InvalidInput(f"unknown property {unknown[0]!r}", path=unknown[0])
    if body.get("id", config_id) != config_id:
        raise InvalidInput(
            f"id {body.get('id')!r} does not match the configuration id {config_id!r} in the path",
            path="id",
        )
    schema_version = body.get("schemaVersion") or "1.0"
    if not isinstance(schema_version, str):
        raise InvalidInput("schemaVersion must be a string", path="schemaVersion")
    condition = body.get("targetCondition") or ""
    if not isinstance(condition, str):
        raise InvalidInput("targetCondition must be a string", path="targetCondition")
    error = condition_error(condition)
    if error:
        raise InvalidInput(error, path="targetCondition")
    if creating:
        content, kind, layered = _content(body.get("content"))
    else:
        content, kind, layered = {}, "", False
    rollout_given = "rollout" in body
    rollout: RolloutSpec | None = None
    if body.get("rollout") is not None:
        try:
            rollout = parse_rollout(body["rollout"])
        except RolloutSpecError as exc:
            raise InvalidInput(exc.message, path=exc.path) from None
    return ConfigurationBody(
        config_id=config_id,
        schema_version=schema_version,
        labels=_labels(body.get("labels")),
        content=content,
        kind=kind,
        layered=layered,
        target_condition=condition,
        priority=_priority(body.get("priority")),
        metric_queries=_metric_queries(body.get("metrics")),
        rollout=rollout,
        rollout_given=rollout_given,
    )


def content_unchanged(stored: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """True when an update's ``content`` is absent, empty, or the same as the stored one."""
    given = body.get("content")
    if not given:
        return True
    if not isinstance(given, dict):
        return False
    trimmed = {k: v for k, v in given.items() if v not in (None, {})}
    return not trimmed or content_hash(trimmed) == content_hash(stored)
