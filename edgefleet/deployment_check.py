"""Deployment manifest validation: the verdict IoT Hub and ``az iot edge`` would give, with paths.

Pure: a JSON value in, a :class:`Verdict` out. ``$edgeAgent`` and ``$edgeHub`` desired properties
are checked against the SchemaStore schemas that ``az`` uses (``edgefleet/deployment_schemas``),
createOptions chunks, routes and module twins against IoT Hub's documented limits, and a valid
result is finally parsed by ``edgefleet.manifest`` so that the agent accepts what passes here.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from edgefleet.manifest import (
    EDGE_AGENT_SCHEMAS,
    EDGE_HUB_SCHEMAS,
    ManifestError,
    parse_deployment,
    parse_layer,
    substitute,
)

# IoT Hub limits (IoT Edge "limits and restrictions", IoT Hub module twin docs):
MAX_MODULES = 50  # "50 modules per deployment" for IoT Edge automatic deployments
MAX_DESIRED_BYTES = 32 * 1024  # properties/desired of one module twin, serialized JSON
MAX_KEY_BYTES = 1024  # twin property names, UTF-8
MAX_DEPTH = 10  # nesting of JSON objects in desired properties
CHUNK_SIZE = 512  # one createOptions value (the edge agent's twin value limit)
MAX_CHUNKS = 8  # createOptions plus createOptions01..07 (iotedgedev and the edge agent)

DESIRED = "properties.desired"
DOTTED = DESIRED + "."
SYSTEM = ("$edgeAgent", "$edgeHub")
CONTENT_KEYS = ("modulesContent", "deviceContent", "moduleContent")
CONFIGURATION_KEYS = frozenset(
    {
        "id",
        "schemaVersion",
        "labels",
        "content",
        "targetCondition",
        "createdTimeUtc",
        "lastUpdatedTimeUtc",
        "priority",
        "systemMetrics",
        "metrics",
        "etag",
    }
)
_CHUNK_KEY = re.compile(r"^createOptions(\d\d)?$")
_TWIN_KEY_FORBIDDEN = re.compile(r"[.$ \x00-\x1f\x7f-\x9f]")

Kind = Literal["base", "layered"]
ContentKind = Literal["modules", "device", "module"]


@dataclass(frozen=True)
class Finding:
    path: str
    message: str


@dataclass(frozen=True)
class Verdict:
    valid: bool
    kind: Kind
    errors: tuple[Finding, ...]
    warnings: tuple[Finding, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "kind": self.kind,
            "errors": [{"path": f.path, "message": f.message} for f in self.errors],
            "warnings": [{"path": f.path, "message": f.message} for f in self.warnings],
        }


class _Report:
    def __init__(self) -> None:
        self.errors: list[Finding] = []
        self.warnings: list[Finding] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(Finding(path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(Finding(path, message))

    def verdict(self, kind: Kind) -> Verdict:
        return Verdict(not self.errors, kind, tuple(self.errors), tuple(self.warnings))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


# --------------------------------------------------------------------------- placeholders


class _Recorder(Mapping[str, str]):
    """A variables mapping that knows no name and remembers every one asked for, so that
    ``substitute`` finds the placeholders exactly as it would expand them."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.names.append(name)
        return False

    def __getitem__(self, name: str) -> str:
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def find_placeholders(doc: Any, path: str = "") -> list[tuple[str, str]]:
    """Every unexpanded ``${VAR}`` / ``$VAR`` as (JSON path, variable name), keys included.

    Process modules' shell commands (``settings.command``, ``healthCheck.command``) use
    ``$VAR`` for the shell: only ``${VAR}`` counts there, as the agent expands them.
    """
    found: list[tuple[str, str]] = []

    def names(text: str, shell: bool) -> list[str]:
        rec = _Recorder()
        substitute(text, rec, braced_only=shell)
        return rec.names

    def walk(value: Any, at: str, shell: bool) -> None:
        if isinstance(value, str):
            found.extend((at, n) for n in names(value, shell))
        elif isinstance(value, Mapping):
            for key, item in value.items():
                child = _join(at, str(key))
                found.extend((child, n) for n in names(str(key), False))
                walk(item, child, shell or _is_shell_command(child))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, _join(at, i), shell)

    walk(doc, path, False)
    return found


def _is_shell_command(path: str) -> bool:
    return path.endswith(("settings.command", "healthCheck.command"))


# --------------------------------------------------------------------------- schemas


@cache
def _schema(name: str) -> dict[str, Any]:
    text = resources.files("edgefleet.deployment_schemas").joinpath(f"{name}.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


_PROCESS_SETTINGS = {
    "command": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "workingDir": {"type": "string"},
    "healthCheck": {"type": "object", "required": ["command"]},
}


def _relax_module(module: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Accept edgefleet's process modules beside Docker ones.

    ``type: "process"`` runs ``settings.command`` (optionally ``workingDir``, ``healthCheck``)
    instead of an image: ``image`` becomes required only for Docker modules. createOptions is
    left to :func:`_check_create_options`, which explains template-only object values.
    """
    settings = copy.deepcopy(settings)
    settings.pop("required", None)
    settings.setdefault("properties", {}).update(_PROCESS_SETTINGS)
    module = copy.deepcopy(module)
    module["properties"]["type"] = {"enum": ["docker", "process"]}
    module["properties"]["settings"] = settings
    module["if"] = {"properties": {"type": {"const": "process"}}, "required": ["type"]}
    module["then"] = {"properties": {"settings": {"required": ["command"]}}}
    module["else"] = {"properties": {"settings": {"required": ["image"]}}}
    return module


@cache
def _agent_schema(version: str) -> dict[str, Any]:
    schema = copy.deepcopy(_schema(f"azure-iot-edgeagent-deployment-{version}"))
    schema.pop("id", None)
    defs = schema["definitions"]
    defs["createOptions"] = {}
    desired = schema["properties"]["$edgeAgent"]["properties"][DESIRED]
    modules = desired["properties"]["modules"]["patternProperties"]
    for pattern, module in modules.items():
        modules[pattern] = _relax_module(module, defs["moduleSettings"])
    return schema


@cache
def _hub_schema(version: str) -> dict[str, Any]:
    schema = copy.deepcopy(_schema(f"azure-iot-edgehub-deployment-{version}"))
    schema.pop("id", None)
    return schema


def _sub_schema(root: dict[str, Any], *path: str) -> dict[str, Any]:
    node: Any = root
    for part in path:
        node = node[part]
    return dict(node, definitions=root.get("definitions", {}))


def _layered_schemas() -> dict[str, dict[str, Any]]:
    """Schemas of what a layered key may set, from the newest agent and hub schemas."""
    agent = _agent_schema(EDGE_AGENT_SCHEMAS[-1])
    desired = ("properties", "$edgeAgent", "properties", DESIRED, "properties")
    modules = _sub_schema(agent, *desired, "modules", "patternProperties")
    credentials = _sub_schema(
        agent, *desired, "runtime", "properties", "settings", "properties", "registryCredentials"
    )
    hub = _hub_schema(EDGE_HUB_SCHEMAS[-1])
    routes = _sub_schema(
        hub, "properties", "$edgeHub", "properties", DESIRED, "properties", "routes"
    )
    return {
        "module": dict(next(iter(modules.values())), definitions=agent["definitions"]),
        "credential": dict(
            next(iter(credentials["patternProperties"].values())),
            definitions=agent["definitions"],
        ),
        "route": next(iter(routes["patternProperties"].values())),
    }


def _validate(schema: Mapping[str, Any], value: Any, path: str, report: _Report) -> bool:
    """Report schema errors under ``path``; the schemas say draft-04, written so draft 7 reads
    them the same (needed for the process-module ``if``/``then`` above)."""
    ok = True
    validator = jsonschema.Draft7Validator(schema)
    for err in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.path))):
        ok = False
        shown: ValidationError = err
        if err.context:
            # anyOf (routes: object or string): explain the branch of the value's own type
            fitting = [e for e in err.context if e.validator != "type" or e.relative_path]
            shown = best_match(fitting or err.context) or err
        at = path
        for part in shown.absolute_path:
            at = _join(at, part)
        report.error(at, shown.message)
    return ok


# --------------------------------------------------------------------------- pieces


def _check_create_options(settings: Any, path: str, report: _Report) -> None:
    if not isinstance(settings, Mapping):
        return
    chunks: dict[int, Any] = {}
    for key, value in settings.items():
        m = _CHUNK_KEY.match(str(key))
        if m:
            chunks[int(m.group(1) or 0)] = value
    if not chunks:
        return
    text = ""
    ok = True
    for index in sorted(chunks):
        key = "createOptions" if index == 0 else f"createOptions{index:02d}"
        at = _join(path, key)
        value = chunks[index]
        if isinstance(value, Mapping | list):
            report.error(
                at,
                "createOptions as a JSON object is only valid in a deployment template; "
                "run `edgefleet deployment genconfig` to turn it into a string",
            )
            ok = False
            continue
        if not isinstance(value, str):
            report.error(at, "createOptions must be a string")
            ok = False
            continue
        if len(value) > CHUNK_SIZE:
            report.error(
                at,
                f"{len(value)} characters; each createOptions value holds at most {CHUNK_SIZE} "
                "(split it into createOptions01, createOptions02, ...)",
            )
            ok = False
        text += value
    if not ok:
        return
    expected = list(range(len(chunks)))
    if sorted(chunks) != expected:
        missing = next(i for i in expected if i not in chunks)
        name = "createOptions" if missing == 0 else f"createOptions{missing:02d}"
        report.error(
            _join(path, name), "createOptions chunks must be numbered without gaps; missing"
        )
        return
    if len(chunks) > MAX_CHUNKS:
        report.error(
            _join(path, f"createOptions{len(chunks) - 1:02d}"),
            f"at most {MAX_CHUNKS} createOptions values (createOptions..createOptions07)",
        )
        return
    if not text.strip():
        return
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        report.error(
            _join(path, "createOptions"), f"joined createOptions is not valid JSON: {exc.msg}"
        )
        return
    if not isinstance(parsed, dict):
        report.error(_join(path, "createOptions"), "joined createOptions must be a JSON object")


def _module_settings(agent_desired: Mapping[str, Any], path: str) -> Iterator[tuple[Any, str]]:
    system = agent_desired.get("systemModules")
    if isinstance(system, Mapping):
        for name, mod in system.items():
            if isinstance(mod, Mapping):
                yield mod.get("settings"), f"{path}.systemModules.{name}.settings"
    modules = agent_desired.get("modules")
    if isinstance(modules, Mapping):
        for name, mod in modules.items():
            if isinstance(mod, Mapping):
                yield mod.get("settings"), f"{path}.modules.{name}.settings"


def _depth(value: Any) -> int:
    if isinstance(value, Mapping):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((_depth(v) for v in value), default=0)
    return 0


def _check_twin_desired(desired: Any, path: str, report: _Report, user_keys: bool) -> None:
    """IoT Hub's limits on one module twin's desired properties."""
    size = len(json.dumps(desired, separators=(",", ":")).encode("utf-8"))
    if size > MAX_DESIRED_BYTES:
        report.error(
            path, f"desired properties are {size} bytes; IoT Hub allows {MAX_DESIRED_BYTES}"
        )
    if _depth(desired) > MAX_DEPTH:
        report.error(path, f"desired properties nest deeper than {MAX_DEPTH} levels")
    if not user_keys:
        return

    def keys(value: Any, at: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                child = _join(at, str(key))
                if len(str(key).encode("utf-8")) > MAX_KEY_BYTES:
                    report.error(child, f"property name longer than {MAX_KEY_BYTES} bytes")
                elif _TWIN_KEY_FORBIDDEN.search(str(key)):
                    report.error(child, "twin property names may not contain '.', '$' or spaces")
                keys(item, child)

    keys(desired, path)


def _check_version(
    desired: Mapping[str, Any], allowed: tuple[str, ...], path: str, r: _Report
) -> str | None:
    version = desired.get("schemaVersion")
    at = path + ".schemaVersion"
    if version is None:
        r.error(at, "schemaVersion is required")
        return None
    if not isinstance(version, str) or version not in allowed:
        r.error(at, f"schemaVersion {version!r} is not supported (supported: {', '.join(allowed)})")
        return None
    return version


# --------------------------------------------------------------------------- base


def _check_base(mc: Mapping[str, Any], report: _Report) -> None:
    agent = mc.get("$edgeAgent")
    hub = mc.get("$edgeHub")
    if not isinstance(agent, Mapping) or DESIRED not in agent:
        report.error(
            "modulesContent.$edgeAgent", "a base deployment sets $edgeAgent properties.desired"
        )
    else:
        _check_agent(agent, report)
    if not isinstance(hub, Mapping) or DESIRED not in hub:
        report.error(
            "modulesContent.$edgeHub", "a base deployment sets $edgeHub properties.desired"
        )
    else:
        _check_hub(hub, report)
    for name, section in mc.items():
        if name not in SYSTEM:
            _check_module_twin(name, section, report)


def _check_agent(section: Mapping[str, Any], report: _Report) -> None:
    path = "modulesContent.$edgeAgent." + DESIRED
    desired = section[DESIRED]
    if not isinstance(desired, Mapping):
        report.error(path, "must be an object")
        return
    version = _check_version(desired, EDGE_AGENT_SCHEMAS, path, report)
    for settings, at in _module_settings(desired, path):
        _check_create_options(settings, at, report)
    modules = desired.get("modules")
    if isinstance(modules, Mapping) and len(modules) > MAX_MODULES:
        report.error(
            path + ".modules",
            f"{len(modules)} modules; IoT Hub allows {MAX_MODULES} per deployment",
        )
    _check_twin_desired(desired, path, report, user_keys=False)
    if version is not None:
        _validate(
            _agent_schema(version),
            {"$edgeAgent": dict(section)},
            "modulesContent",
            report,
        )


def _check_hub(section: Mapping[str, Any], report: _Report) -> None:
    path = "modulesContent.$edgeHub." + DESIRED
    desired = section[DESIRED]
    if not isinstance(desired, Mapping):
        report.error(path, "must be an object")
        return
    version = _check_version(desired, EDGE_HUB_SCHEMAS, path, report)
    _check_twin_desired(desired, path, report, user_keys=False)
    if version is not None:
        _validate(_hub_schema(version), {"$edgeHub": dict(section)}, "modulesContent", report)


def _check_module_twin(name: str, section: Any, report: _Report) -> None:
    path = f"modulesContent.{name}"
    if not isinstance(section, Mapping):
        report.error(path, 'must be an object like {"properties.desired": {...}}')
        return
    merged: dict[str, Any] = {}
    for key, value in section.items():
        at = _join(path, key)
        if key == DESIRED:
            if not isinstance(value, Mapping):
                report.error(at, "must be an object")
                continue
            merged.update(value)
        elif key.startswith(DOTTED):
            merged[key[len(DOTTED) :]] = value
        else:
            report.error(at, "a module twin section sets only properties.desired")
    _check_twin_desired(merged, path + "." + DESIRED, report, user_keys=True)


# --------------------------------------------------------------------------- layered


def _check_layered(mc: Mapping[str, Any], report: _Report) -> None:
    schemas = _layered_schemas()
    module_count = 0
    for name, section in mc.items():
        path = f"modulesContent.{name}"
        if name not in SYSTEM:
            _check_module_twin(name, section, report)
            continue
        if not isinstance(section, Mapping):
            report.error(path, "must be an object")
            continue
        for key, value in section.items():
            at = _join(path, key)
            target = key[len(DOTTED) :].split(".") if key.startswith(DOTTED) else []
            if name == "$edgeAgent" and len(target) == 2 and target[0] == "modules":
                module_count += 1
                _check_create_options(
                    value.get("settings") if isinstance(value, Mapping) else None,
                    _join(at, "settings"),
                    report,
                )
                _validate(schemas["module"], value, at, report)
                _check_twin_desired(value, at, report, user_keys=False)
            elif (
                name == "$edgeAgent"
                and target[:3]
                == [
                    "runtime",
                    "settings",
                    "registryCredentials",
                ]
                and len(target) == 4
            ):
                _validate(schemas["credential"], value, at, report)
            elif name == "$edgeHub" and len(target) == 2 and target[0] == "routes":
                _validate(schemas["route"], value, at, report)
            elif key == DESIRED:
                report.error(
                    at,
                    f"a layered deployment may not replace all of {name}'s desired properties; "
                    "use properties.desired.modules.<name> / properties.desired.routes.<name>",
                )
            else:
                what = (
                    "properties.desired.modules.<name> or "
                    "properties.desired.runtime.settings.registryCredentials.<name>"
                    if name == "$edgeAgent"
                    else "properties.desired.routes.<name>"
                )
                report.error(at, f"a layered deployment sets {name} only through {what}")
    if module_count > MAX_MODULES:
        report.error(
            "modulesContent.$edgeAgent",
            f"{module_count} modules; IoT Hub allows {MAX_MODULES} per deployment",
        )


# --------------------------------------------------------------------------- entry points


def _is_layered(mc: Mapping[str, Any]) -> bool:
    return any(
        isinstance(section, Mapping) and any(str(k).startswith(DOTTED) for k in section)
        for section in mc.values()
    )


def _has_base_agent(mc: Mapping[str, Any]) -> bool:
    agent = mc.get("$edgeAgent")
    return isinstance(agent, Mapping) and DESIRED in agent


def _check_modules_content(mc: Any, layered: bool | None, report: _Report) -> Kind:
    if not isinstance(mc, Mapping):
        report.error("modulesContent", "must be an object")
        return "layered" if layered else "base"
    detected = _is_layered(mc)
    kind: Kind = "layered" if (detected if layered is None else layered) else "base"
    if layered is False and detected:
        report.error(
            "modulesContent",
            "layered content (properties.desired.<path> keys) given as a base deployment",
        )
        return kind
    if layered is True and not detected and _has_base_agent(mc):
        report.error(
            "modulesContent",
            "base deployment content ($edgeAgent properties.desired) flagged as layered",
        )
        return kind
    if kind == "base":
        _check_base(mc, report)
    else:
        _check_layered(mc, report)
    if not report.errors:
        _agent_accepts(mc, kind, report)
    return kind


def _agent_accepts(mc: Mapping[str, Any], kind: Kind, report: _Report) -> None:
    """Parse with the agent's own models: what passes here must apply on a device."""
    try:
        if kind == "base":
            parse_deployment({"modulesContent": mc})
        else:
            parse_layer({"modulesContent": mc})
    except ManifestError as exc:
        path = exc.path if exc.path.startswith("modulesContent") else "modulesContent"
        report.error(path, str(exc).removeprefix(f"{exc.path}: "))


def _check_configuration_fields(doc: Mapping[str, Any], report: _Report) -> None:
    priority = doc.get("priority")
    if priority is not None and (not isinstance(priority, int) or priority < 0):
        report.error("priority", "must be a non-negative integer")
    target = doc.get("targetCondition")
    if target is not None and not isinstance(target, str):
        report.error("targetCondition", "must be a string")
    labels = doc.get("labels")
    if labels is not None and (
        not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values())
    ):
        report.error("labels", "must be an object of string values")
    for key in doc:
        if key not in CONFIGURATION_KEYS:
            report.warn(key, "not a configuration field; IoT Hub ignores it")


def check_deployment(
    doc: Any,
    *,
    layered: bool | None = None,
    variables: Mapping[str, str] | None = None,
) -> Verdict:
    """Validate a deployment manifest, a ``{"content": ...}`` wrapper or a whole IoT Hub
    configuration object. ``layered=None`` detects the kind from the keys; ``variables``
    expand ``${VAR}``/``$VAR`` placeholders first (what is left over is an error)."""
    report = _Report()
    fallback: Kind = "layered" if layered else "base"
    if not isinstance(doc, Mapping):
        report.error("", "a deployment must be a JSON object")
        return report.verdict(fallback)
    if variables is not None:
        doc = substitute(doc, variables)
    if "content" in doc:
        _check_configuration_fields(doc, report)
        content = doc["content"]
    else:
        content = doc
    if not isinstance(content, Mapping):
        report.error("content", "must be an object")
        return report.verdict(fallback)
    placeholders = find_placeholders(content)
    for path, name in placeholders:
        report.error(
            path,
            f"template variable {name} is not set (pass it in the environment or an .env file)",
        )
    if placeholders:
        return report.verdict(fallback)
    if "modulesContent" in content or "moduleContent" in content:
        return _check_content(content, layered, report, deployment=True)
    if "$edgeAgent" in content or "$edgeHub" in content:
        kind = _check_modules_content(content, layered, report)
        return report.verdict(kind)
    report.error("", "no modulesContent: not a deployment manifest")
    return report.verdict(fallback)


def content_kind(content: Mapping[str, Any]) -> ContentKind:
    """What a configuration's content configures: edge modules, device twins or module twins.
    A legacy ``moduleContent`` holding ``$edgeAgent`` is an edge deployment."""
    if "modulesContent" in content:
        return "modules"
    if "deviceContent" in content:
        return "device"
    legacy = content.get("moduleContent")
    if isinstance(legacy, Mapping) and any(k in legacy for k in SYSTEM):
        return "modules"
    return "module"


def check_configuration_content(content: Mapping[str, Any], *, layered: bool) -> Verdict:
    """Validate the ``content`` of a ``PUT /configurations`` body."""
    return _check_content(content, layered, _Report(), deployment=False)


def _check_content(
    content: Mapping[str, Any], layered: bool | None, report: _Report, *, deployment: bool
) -> Verdict:
    fallback: Kind = "layered" if layered else "base"
    kinds = ("modulesContent", "moduleContent") if deployment else CONTENT_KEYS
    expected = " or ".join(kinds)
    for key in content:
        if key not in kinds and not (deployment and key == "$schema-template"):
            report.error(key, f"unknown content key (expected {expected})")
    present = [k for k in kinds if k in content]
    if not present:
        report.error("", f"content needs {expected}")
        return report.verdict(fallback)
    if len(present) > 1:
        report.error(present[1], f"content sets both {present[0]} and {present[1]}")
        return report.verdict(fallback)
    if "$schema-template" in content:
        report.warn("$schema-template", "a template marker; `deployment genconfig` drops it")
    kind = content_kind(content) if not deployment else "modules"
    if kind == "modules":
        mc = content.get("modulesContent", content.get("moduleContent"))
        if "moduleContent" in content:
            report.warn("moduleContent", "moduleContent is deprecated; use modulesContent")
        return report.verdict(_check_modules_content(mc, layered, report))
    _check_twin_content(present[0], content[present[0]], report)
    return report.verdict(fallback)


def _check_twin_content(key: str, body: Any, report: _Report) -> None:
    """deviceContent / moduleContent: properties.desired keys (dotted or whole), any JSON."""
    if not isinstance(body, Mapping):
        report.error(key, "must be an object")
        return
    if not body:
        report.error(key, "sets no properties.desired")
        return
    merged: dict[str, Any] = {}
    for prop, value in body.items():
        at = _join(key, prop)
        if prop == DESIRED:
            if isinstance(value, Mapping):
                merged.update(value)
            else:
                report.error(at, "must be an object")
        elif prop.startswith(DOTTED) and all(prop[len(DOTTED) :].split(".")):
            merged[prop[len(DOTTED) :]] = value
        else:
            report.error(at, "only properties.desired or properties.desired.<path> keys")
    _check_twin_desired(merged, _join(key, DESIRED), report, user_keys=False)
