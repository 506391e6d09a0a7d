"""What the dashboard shows, decided without I/O: fleet rows from twins, the query a filter box
stands for, the modules table of an edge device, the twin as a tree, the editable twin document."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud_hub.query import QueryError, parse_query

FAILED_RUNTIME_STATUSES = frozenset({"failed", "backoff", "unhealthy"})
_FLEET_PREFIX = "SELECT * FROM devices WHERE "


@dataclass(frozen=True)
class FilterError:
    message: str
    column: int  # 1-based, in the text the user typed

    def __str__(self) -> str:
        return f"column {self.column}: {self.message}"


def fleet_query(filter_text: str) -> tuple[str, FilterError | None]:
    """The query of a filter box: a bare condition (``tags.site = 'a'``) or a whole
    ``SELECT * FROM devices ...``; an error carries the column in the filter text."""
    text = filter_text.strip()
    if not text:
        return "SELECT * FROM devices", None
    whole = text.lower().startswith("select")
    query_text = text if whole else _FLEET_PREFIX + text
    shift = 0 if whole else len(_FLEET_PREFIX)
    try:
        query = parse_query(query_text)
    except QueryError as exc:
        return query_text, FilterError(exc.reason, max(1, exc.offset - shift + 1))
    if query.source != "devices" or query.select is not None or query.is_aggregate:
        return query_text, FilterError("the fleet lists SELECT * FROM devices", 1)
    return query_text, None


@dataclass(frozen=True)
class DeploymentState:
    id: str
    status: str  # Applied | Targeted


@dataclass
class FleetRow:
    device_id: str
    connected: bool
    last_activity: str | None
    edge: bool
    status: str  # enabled | disabled
    tags: list[str]
    deployments: list[DeploymentState]
    #: what the edge agent reported about its desired version: ok | failed | pending | "" (none)
    agent_state: str
    agent_detail: str
    failed_modules: list[str] = field(default_factory=list)


def flat_tags(tags: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in sorted(tags.items()):
        if isinstance(value, Mapping) and value:
            out += flat_tags(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={value}")
    return out


def failed_modules(agent_reported: Mapping[str, Any]) -> list[str]:
    out = []
    for section in ("systemModules", "modules"):
        for name, module in (agent_reported.get(section) or {}).items():
            if isinstance(module, Mapping) and module.get("runtimeStatus") in (
                FAILED_RUNTIME_STATUSES
            ):
                out.append(name)
    return sorted(out)


def agent_state(agent_twin: Mapping[str, Any] | None) -> tuple[str, str]:
    """(state, detail) of an edge agent's answer to its current desired properties."""
    if agent_twin is None:
        return "", ""
    props = agent_twin.get("properties") or {}
    desired_version = (props.get("desired") or {}).get("$version")
    reported = props.get("reported") or {}
    status = reported.get("lastDesiredStatus") or {}
    if "lastDesiredVersion" not in reported:
        return "pending", "the agent has not reported yet"
    detail = str(status.get("description") or "")
    if reported.get("lastDesiredVersion") != desired_version:
        return "pending", detail or "applying a newer desired version"
    if status.get("code") == 200:
        return "ok", detail
    return "failed", detail or f"code {status.get('code')}"


def fleet_row(twin: Mapping[str, Any], agent_twin: Mapping[str, Any] | None) -> FleetRow:
    configurations = twin.get("configurations") or {}
    deployments = [
        DeploymentState(cid, str((entry or {}).get("status", "")))
        for cid, entry in sorted(configurations.items())
    ]
    deployments.sort(key=lambda d: (d.status != "Applied", d.id))
    state, detail = agent_state(agent_twin)
    reported = ((agent_twin or {}).get("properties") or {}).get("reported") or {}
    return FleetRow(
        device_id=str(twin["deviceId"]),
        connected=twin.get("connectionState") == "Connected",
        last_activity=twin.get("lastActivityTime"),
        edge=bool((twin.get("capabilities") or {}).get("iotEdge")),
        status=str(twin.get("status") or "enabled"),
        tags=flat_tags(twin.get("tags") or {}),
        deployments=deployments,
        agent_state=state,
        agent_detail=detail,
        failed_modules=failed_modules(reported),
    )


@dataclass(frozen=True)
class ModuleRow:
    name: str
    system: bool
    runtime_status: str
    status_description: str
    exit_code: Any
    restart_count: Any
    last_start: str
    last_exit: str
    image: str
    version: str

    @property
    def failed(self) -> bool:
        return self.runtime_status in FAILED_RUNTIME_STATUSES


def module_image(module: Mapping[str, Any]) -> str:
    """What a module runs: its image, or for a process module (no image) its command line."""
    settings = module.get("settings") or {}
    if settings.get("image"):
        return str(settings["image"])
    command = settings.get("command")
    if isinstance(command, list) and command:
        return shlex.join(str(part) for part in command)
    if isinstance(command, str) and command:
        return command
    return str(module.get("type") or "")


def module_rows(
    agent_reported: Mapping[str, Any], agent_desired: Mapping[str, Any] | None = None
) -> list[ModuleRow]:
    """The modules table as IoT Edge reports it in ``$edgeAgent``'s reported properties; modules
    desired but not yet reported show with an empty status."""
    rows: list[ModuleRow] = []
    seen: set[str] = set()
    for section in ("systemModules", "modules"):
        for name, module in sorted((agent_reported.get(section) or {}).items()):
            if not isinstance(module, Mapping):
                continue
            seen.add(name)
            rows.append(
                ModuleRow(
                    name=name,
                    system=section == "systemModules",
                    runtime_status=str(module.get("runtimeStatus") or ""),
                    status_description=str(module.get("statusDescription") or ""),
                    exit_code=module.get("exitCode", ""),
                    restart_count=module.get("restartCount", ""),
                    last_start=str(module.get("lastStartTimeUtc") or ""),
                    last_exit=str(module.get("lastExitTimeUtc") or ""),
                    image=module_image(module),
                    version=str(module.get("version") or ""),
                )
            )
    for name, module in sorted(((agent_desired or {}).get("modules") or {}).items()):
        if name not in seen and isinstance(module, Mapping):
            rows.append(
                ModuleRow(
                    name, False, "", "not reported yet", "", "", "", "", module_image(module),
                    str(module.get("version") or ""),
                )
            )  # fmt: skip
    return rows


@dataclass
class TreeNode:
    key: str
    value: Any = None  # a leaf's JSON value
    children: list[TreeNode] | None = None
    updated: str = ""  # $metadata.$lastUpdated


def twin_tree(
    section: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
) -> list[TreeNode]:
    """A twin section as a tree, each node with the time its ``$metadata`` gives."""
    nodes = []
    meta = metadata if metadata is not None else section.get("$metadata") or {}
    for key, value in sorted(section.items()):
        if key.startswith("$"):
            continue
        node_meta = meta.get(key) if isinstance(meta, Mapping) else None
        updated = str((node_meta or {}).get("$lastUpdated") or "")
        if isinstance(value, Mapping) and value:
            nodes.append(TreeNode(key, children=twin_tree(value, node_meta or {}), updated=updated))
        else:
            nodes.append(TreeNode(key, value=value, updated=updated))
    return nodes


def editable_twin(twin: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a twin an operator edits: tags and desired properties, without the ``$``
    bookkeeping (``$metadata``, ``$version``)."""
    desired = (twin.get("properties") or {}).get("desired") or {}
    return {
        "tags": dict(twin.get("tags") or {}),
        "properties": {"desired": {k: v for k, v in desired.items() if not k.startswith("$")}},
    }


def short_time(text: str | None) -> str:
    """``2026-01-02T03:04:05.123456Z`` as ``2026-01-02 03:04:05Z`` (seconds are enough on a
    page; the full value stays in the element's title)."""
    if not text:
        return "\u2014"
    date, sep, clock = text.partition("T")
    if not sep:
        return text
    zone = "Z" if clock.endswith("Z") else ""
    return f"{date} {clock.split('.')[0].rstrip('Z')}{zone}"


def mask(secret: str | None) -> str:
    if not secret:
        return ""
    return secret[:4] + "\u2022" * 12
