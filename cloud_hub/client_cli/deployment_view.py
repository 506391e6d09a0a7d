"""What the ``edgefleet deployment`` hub commands send and show, decided without I/O: the PUT body
built from a manifest file and options, and the rows, status and batch progress read from a
configuration JSON (``cloud_hub.deployments.store.configuration_json``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cloud_hub.deployments.configuration import is_layered
from cloud_hub.deployments.rollout import RolloutSpecError, batch_sizes, parse_rollout

TERMINAL_ROLLOUT = frozenset({"completed", "aborted", "rolledBack"})
CONFIGURATION_FIELDS = ("labels", "targetCondition", "priority", "metrics", "schemaVersion")


def parse_pairs(values: Iterable[str], option: str) -> dict[str, str]:
    """``["k=v", ...]`` to a dict; ValueError naming the option when one has no ``=``."""
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} {value!r}: expected NAME=VALUE")
        pairs[key.strip()] = rest
    return pairs


def configuration_body(
    config_id: str,
    doc: Mapping[str, Any],
    *,
    target_condition: str | None,
    priority: int | None,
    labels: Mapping[str, str],
    metrics: Mapping[str, str],
    rollout: Any = None,
) -> dict[str, Any]:
    """The PUT body for ``doc``: a manifest (``{modulesContent}`` or bare ``{$edgeAgent, ...}``),
    a ``{content}`` wrapper or a whole configuration, whose fields the options override."""
    body: dict[str, Any] = {"id": config_id}
    if "content" in doc:
        body.update({k: doc[k] for k in CONFIGURATION_FIELDS if k in doc})
        if doc.get("rollout") is not None:
            body["rollout"] = doc["rollout"]
        body["content"] = doc["content"]
    elif "modulesContent" in doc or "moduleContent" in doc:
        body["content"] = dict(doc)
    else:
        body["content"] = {"modulesContent": dict(doc)}
    if target_condition is not None:
        body["targetCondition"] = target_condition
    if priority is not None:
        body["priority"] = priority
    if labels:
        body["labels"] = {**(body.get("labels") or {}), **labels}
    if metrics:
        queries = dict((body.get("metrics") or {}).get("queries") or {})
        body["metrics"] = {"queries": {**queries, **metrics}}
    if rollout is not None:
        body["rollout"] = rollout
    return body


def rollout_error(rollout: Any) -> str:
    """'' when the rollout object is valid, else ``path: message``."""
    try:
        parse_rollout(rollout)
    except RolloutSpecError as exc:
        return f"{exc.path}: {exc.message}"
    return ""


def kind(config: Mapping[str, Any]) -> str:
    content = config.get("content") or {}
    if "deviceContent" in content:
        return "device"
    if "moduleContent" in content and not any(
        k in (content.get("moduleContent") or {}) for k in ("$edgeAgent", "$edgeHub")
    ):
        return "module"
    return "layered" if is_layered(content) else "base"


def module_names(config: Mapping[str, Any]) -> list[str]:
    """The modules an edge deployment sets: whole (base) or by dotted path (layered)."""
    content = config.get("content") or {}
    agent = (content.get("modulesContent") or content.get("moduleContent") or {}).get("$edgeAgent")
    if not isinstance(agent, Mapping):
        return []
    names = set((agent.get("properties.desired") or {}).get("modules") or {})
    prefix = "properties.desired.modules."
    names |= {k[len(prefix) :].split(".")[0] for k in agent if k.startswith(prefix)}
    return sorted(names)


def system_counts(config: Mapping[str, Any]) -> dict[str, int]:
    results = (config.get("systemMetrics") or {}).get("results") or {}
    return {
        "targeted": int(results.get("targetedCount", 0)),
        "applied": int(results.get("appliedCount", 0)),
        "succeeded": int(results.get("reportedSuccessfulCount", 0)),
        "failed": int(results.get("reportedFailedCount", 0)),
    }


def rollout_status(config: Mapping[str, Any]) -> dict[str, Any] | None:
    status = config.get("rolloutStatus")
    return dict(status) if isinstance(status, Mapping) else None


def rollout_text(config: Mapping[str, Any]) -> str:
    status = rollout_status(config)
    if status is None:
        return "-"
    state = str(status.get("state", ""))
    if "batches" not in status:
        return state
    return (
        f"{state} {status['batch']}/{status['batches']} "
        f"(ok {status['healthy']}, failed {status['failed']}, pending {status['pending']})"
    )


def list_row(config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": config.get("id"),
        "priority": config.get("priority"),
        "kind": kind(config),
        "targetCondition": config.get("targetCondition") or "",
        **system_counts(config),
        "rollout": rollout_text(config),
    }


def is_finished(config: Mapping[str, Any]) -> bool:
    """A watch ends when the rollout has ended; without a rollout it never does."""
    status = rollout_status(config)
    return status is not None and status.get("state") in TERMINAL_ROLLOUT


@dataclass(frozen=True)
class BatchProgress:
    """One rollout batch: ``size`` devices of its own, ``decided`` of them healthy or failed."""

    number: int
    size: int
    decided: int
    state: str  # done | active | waiting


def batch_progress(config: Mapping[str, Any]) -> list[BatchProgress]:
    """Per-batch progress as far as the summary tells it: the sizes come from the rollout spec
    and the targeted count, earlier batches are decided, the current one holds what is pending."""
    status = rollout_status(config)
    if status is None or "batches" not in status:
        return []
    try:
        spec = parse_rollout(config.get("rollout"))
    except RolloutSpecError:
        return []
    targeted = max(system_counts(config)["targeted"], int(status.get("updated", 0)))
    sizes = batch_sizes(spec, targeted)
    current = int(status["batch"]) - 1
    decided_total = int(status.get("healthy", 0)) + int(status.get("failed", 0))
    finished = status.get("state") in TERMINAL_ROLLOUT
    bars: list[BatchProgress] = []
    before = 0
    for index, cumulative in enumerate(sizes):
        size = cumulative - before
        decided = max(0, min(size, decided_total - before))
        if index < current or (finished and index == current):
            state = "done"
        elif index == current:
            state = "active"
        else:
            state, decided = "waiting", 0
        bars.append(BatchProgress(index + 1, size, decided, state))
        before = cumulative
    return bars


def status_json(config: Mapping[str, Any]) -> dict[str, Any]:
    """What ``deployment status`` reports: metrics (system and custom) and the rollout."""
    return {
        "id": config.get("id"),
        "targetCondition": config.get("targetCondition") or "",
        "priority": config.get("priority"),
        "systemMetrics": dict((config.get("systemMetrics") or {}).get("results") or {}),
        "metrics": dict((config.get("metrics") or {}).get("results") or {}),
        "rolloutStatus": rollout_status(config),
        "batches": [
            {"batch": b.number, "size": b.size, "decided": b.decided, "state": b.state}
            for b in batch_progress(config)
        ],
    }


def history_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    configurations = entry.get("configurations") or []
    return {
        "started": entry.get("startedTimeUtc") or "",
        "configurations": ", ".join(
            f"{c.get('id')}@{str(c.get('contentHash') or '')[:8]}" for c in configurations
        ),
        "succeeded": entry.get("succeededTimeUtc") or "",
        "ended": entry.get("endedTimeUtc") or "",
    }
