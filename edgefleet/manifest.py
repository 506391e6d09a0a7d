"""IoT Edge deployment manifests: pydantic models, parsing, validation and ${VAR} templates.

Both the hub (deployments/configurations) and the edge agent use this module. Validation errors
carry IoT Edge's ``lastDesiredStatus`` codes: 400 (format error, with the JSON path), 412
(unsupported schema version) and 417 (empty desired properties).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

EDGE_AGENT_SCHEMAS = ("1.0", "1.1")
EDGE_HUB_SCHEMAS = ("1.0", "1.1", "1.2")

RestartPolicy = Literal["never", "on-failure", "on-unhealthy", "always"]
ModuleStatus = Literal["running", "stopped"]
PullPolicy = Literal["on-create", "never"]

_CHUNK_RE = re.compile(r"^createOptions(\d{2})$")


class ManifestError(ValueError):
    """A manifest that cannot be applied; ``code`` is IoT Edge's lastDesiredStatus code."""

    def __init__(self, code: int, description: str, path: str = "") -> None:
        self.code = code
        self.path = path
        self.description = f"{path}: {description}" if path else description
        super().__init__(self.description)


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class EnvValue(_Model):
    value: str | int | float | bool | None = None


class RegistryCredential(_Model):
    username: str
    password: str
    address: str


class RuntimeSettings(_Model):
    minDockerVersion: str | None = None
    loggingOptions: str | None = None
    registryCredentials: dict[str, RegistryCredential] = Field(default_factory=dict)


class Runtime(_Model):
    type: Literal["docker"] = "docker"
    settings: RuntimeSettings = Field(default_factory=RuntimeSettings)


class HealthCheck(_Model):
    """Process modules' health check (Docker modules use the image's HEALTHCHECK)."""

    command: list[str] | str
    intervalSecs: float = Field(default=30.0, gt=0)
    timeoutSecs: float = Field(default=10.0, gt=0)
    retries: int = Field(default=3, ge=1)

    def argv(self) -> list[str]:
        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)


class ModuleSettings(_Model):
    """Docker settings (``image``, ``createOptions``) or process settings (``command``...)."""

    image: str | None = None
    createOptions: str = ""
    command: list[str] | str | None = None
    workingDir: str | None = None
    healthCheck: HealthCheck | None = None

    @field_validator("createOptions", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        # Templates give createOptions as an object; the deployed form is a JSON string.
        if isinstance(v, dict):
            return json.dumps(v, separators=(",", ":"))
        return "" if v is None else v

    def create_options(self) -> dict[str, Any]:
        """createOptions plus its createOptions01..99 chunks, parsed as Docker create JSON."""
        chunks = sorted(
            (int(m.group(1)), str(v))
            for k, v in (self.model_extra or {}).items()
            if (m := _CHUNK_RE.match(k))
        )
        text = self.createOptions + "".join(v for _, v in chunks)
        if not text.strip():
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"createOptions is not valid JSON: {exc.msg}") from exc
        if not isinstance(data, dict):
            raise ValueError("createOptions must be a JSON object")
        return data

    def argv(self) -> list[str]:
        if self.command is None:
            return []
        if isinstance(self.command, str):
            return shlex.split(self.command)
        return list(self.command)


class SystemModule(_Model):
    type: Literal["docker", "process"] = "docker"
    status: ModuleStatus = "running"
    restartPolicy: RestartPolicy = "always"
    startupOrder: int = Field(default=0, ge=0)
    imagePullPolicy: PullPolicy = "on-create"
    settings: ModuleSettings = Field(default_factory=ModuleSettings)
    env: dict[str, EnvValue] = Field(default_factory=dict)

    def env_values(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in self.env.items():
            if v.value is None:
                continue
            out[k] = str(v.value).lower() if isinstance(v.value, bool) else str(v.value)
        return out


class Module(SystemModule):
    version: str = "1.0"
    status: ModuleStatus = "running"
    restartPolicy: RestartPolicy = "always"


class SystemModules(_Model):
    edgeAgent: SystemModule = Field(default_factory=SystemModule)
    edgeHub: SystemModule | None = None


class EdgeAgentDesired(_Model):
    schemaVersion: str
    runtime: Runtime
    systemModules: SystemModules
    modules: dict[str, Module] = Field(default_factory=dict)

    @field_validator("modules")
    @classmethod
    def _names(cls, v: dict[str, Module]) -> dict[str, Module]:
        for name, mod in v.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
                raise ValueError(f"invalid module name {name!r}")
            if mod.type == "docker" and not mod.settings.image:
                raise ValueError(f"module {name!r}: settings.image is required for type docker")
            if mod.type == "process" and not mod.settings.argv():
                raise ValueError(f"module {name!r}: settings.command is required for type process")
            mod.settings.create_options()  # raises on bad JSON
        return v


class Route(_Model):
    route: str
    priority: int = Field(default=0, ge=0, le=9)
    timeToLiveSecs: int | None = Field(default=None, ge=0)


class StoreAndForward(_Model):
    timeToLiveSecs: int = Field(default=7200, ge=0)


class EdgeHubDesired(_Model):
    schemaVersion: str
    routes: dict[str, Route] = Field(default_factory=dict)
    storeAndForwardConfiguration: StoreAndForward = Field(default_factory=StoreAndForward)

    @field_validator("routes", mode="before")
    @classmethod
    def _routes(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: {"route": r} if isinstance(r, str) else r for k, r in v.items()}
        return v


class Deployment(BaseModel):
    """A parsed ``modulesContent``: agent and hub desired plus per-module desired properties."""

    edge_agent: EdgeAgentDesired
    edge_hub: EdgeHubDesired | None = None
    module_desired: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def to_modules_content(self) -> dict[str, Any]:
        content: dict[str, Any] = {
            "$edgeAgent": {"properties.desired": self.edge_agent.model_dump(exclude_none=True)}
        }
        if self.edge_hub is not None:
            content["$edgeHub"] = {
                "properties.desired": self.edge_hub.model_dump(exclude_none=True)
            }
        for name, desired in self.module_desired.items():
            content[name] = {"properties.desired": desired}
        return content


# --------------------------------------------------------------------------- templates

_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_BARE = re.compile(r"\$([A-Z_][A-Z0-9_]*)")


def substitute(
    obj: Any,
    variables: Mapping[str, str] | None = None,
    strict: bool = False,
    braced_only: bool = False,
) -> Any:
    """Replace ``${VAR}`` and ``$VAR`` (upper case) in every string of a JSON value.

    Variables come from ``variables`` or, if None, the environment. Unknown names stay as they are
    unless ``strict``, which raises ManifestError(400) naming the first one. ``braced_only``
    leaves ``$VAR`` alone (shell commands of process modules use that form).
    """
    env: Mapping[str, str] = os.environ if variables is None else variables

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in env:
            return env[name]
        if strict:
            raise ManifestError(400, f"template variable {name} is not set")
        return m.group(0)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            done = _BRACED.sub(repl, v)
            return done if braced_only else _BARE.sub(repl, done)
        if isinstance(v, dict):
            return {walk(k): walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(obj)


# --------------------------------------------------------------------------- parsing


def _expand_dotted(section: Mapping[str, Any]) -> dict[str, Any]:
    """Turn layered keys (``properties.desired.modules.x``) into nested dicts."""
    out: dict[str, Any] = {}
    for key, value in section.items():
        if key.startswith("properties.desired."):
            node = out.setdefault("properties.desired", {})
            parts = key[len("properties.desired.") :].split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        else:
            existing = out.get(key)
            if isinstance(existing, dict) and isinstance(value, dict):
                existing.update(value)
            else:
                out[key] = value
    return out


def extract_modules_content(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Find ``modulesContent`` in a manifest, a configuration object or a bare content dict."""
    if "content" in doc and isinstance(doc["content"], Mapping):
        doc = doc["content"]
    for key in ("modulesContent", "moduleContent"):
        if key in doc:
            mc = doc[key]
            if not isinstance(mc, Mapping):
                raise ManifestError(400, "must be an object", key)
            return {k: _expand_dotted(v) if isinstance(v, Mapping) else v for k, v in mc.items()}
    if "$edgeAgent" in doc:
        return {k: _expand_dotted(v) if isinstance(v, Mapping) else v for k, v in doc.items()}
    raise ManifestError(417, "no modulesContent in manifest")


def _loc(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _format_error(exc: ValidationError, prefix: str) -> ManifestError:
    errors = exc.errors()
    err = errors[0]
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return ManifestError(400, err["msg"] + more, _loc(prefix, tuple(err["loc"])))


def _check_version(value: Any, allowed: tuple[str, ...], path: str) -> None:
    if value is None:
        raise ManifestError(400, "schemaVersion is required", path)
    if str(value) not in allowed:
        raise ManifestError(
            412, f"schemaVersion {value} is not supported (supported: {', '.join(allowed)})", path
        )


def parse_edge_agent(
    desired: Any, prefix: str = "$edgeAgent.properties.desired"
) -> EdgeAgentDesired:
    """Validate ``$edgeAgent`` desired properties (twin metadata keys starting with $ ignored)."""
    if not isinstance(desired, Mapping):
        raise ManifestError(400, "must be an object", prefix)
    body = {k: v for k, v in desired.items() if not k.startswith("$")}
    if not body:
        raise ManifestError(417, "desired properties are empty", prefix)
    _check_version(body.get("schemaVersion"), EDGE_AGENT_SCHEMAS, prefix + ".schemaVersion")
    try:
        return EdgeAgentDesired.model_validate(body)
    except ValidationError as exc:
        raise _format_error(exc, prefix) from None


def parse_edge_hub(desired: Any, prefix: str = "$edgeHub.properties.desired") -> EdgeHubDesired:
    if not isinstance(desired, Mapping):
        raise ManifestError(400, "must be an object", prefix)
    body = {k: v for k, v in desired.items() if not k.startswith("$")}
    if not body:
        raise ManifestError(417, "desired properties are empty", prefix)
    _check_version(body.get("schemaVersion"), EDGE_HUB_SCHEMAS, prefix + ".schemaVersion")
    try:
        return EdgeHubDesired.model_validate(body)
    except ValidationError as exc:
        raise _format_error(exc, prefix) from None


def parse_deployment(doc: Mapping[str, Any]) -> Deployment:
    """Parse and validate a whole manifest (or configuration, or bare modulesContent)."""
    mc = extract_modules_content(doc)
    agent_sec = mc.get("$edgeAgent")
    if not isinstance(agent_sec, Mapping) or "properties.desired" not in agent_sec:
        raise ManifestError(417, "$edgeAgent properties.desired is missing", "modulesContent")
    prefix = "modulesContent.$edgeAgent.properties.desired"
    agent = parse_edge_agent(agent_sec["properties.desired"], prefix)
    hub: EdgeHubDesired | None = None
    hub_sec = mc.get("$edgeHub")
    if isinstance(hub_sec, Mapping) and "properties.desired" in hub_sec:
        hub = parse_edge_hub(
            hub_sec["properties.desired"], "modulesContent.$edgeHub.properties.desired"
        )
    others: dict[str, dict[str, Any]] = {}
    for name, sec in mc.items():
        if name in ("$edgeAgent", "$edgeHub"):
            continue
        if not isinstance(sec, Mapping) or not isinstance(sec.get("properties.desired", {}), dict):
            raise ManifestError(
                400, "must be {properties.desired: {...}}", f"modulesContent.{name}"
            )
        others[name] = dict(sec.get("properties.desired", {}))
    return Deployment(edge_agent=agent, edge_hub=hub, module_desired=others)


def load_manifest(
    path: str | os.PathLike[str], variables: Mapping[str, str] | None = None, strict: bool = False
) -> Deployment:
    """Read a JSON or YAML manifest file, substitute template variables, parse it."""
    text = open(path, encoding="utf-8").read()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ManifestError(400, f"not JSON or YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError(400, "manifest must be a JSON object")
    return parse_deployment(substitute(doc, variables, strict=strict))


def process_module(
    command: str | list[str],
    *,
    startup_order: int | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A running process module with restart policy ``always`` (manifest JSON)."""
    module: dict[str, Any] = {
        "version": "1.0",
        "type": "process",
        "status": "running",
        "restartPolicy": "always",
        "settings": {"command": command},
    }
    if startup_order is not None:
        module["startupOrder"] = startup_order
    if env:
        module["env"] = {key: {"value": value} for key, value in env.items()}
    return module


def edge_deployment(
    modules: Mapping[str, Any], routes: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A base deployment's ``{"modulesContent": ...}`` running ``modules`` (name -> module JSON),
    with the system modules and, by default, one route of everything upstream."""
    return {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "runtime": {"type": "docker", "settings": {}},
                    "systemModules": {
                        "edgeAgent": {"type": "docker", "settings": {"image": "edgefleet/agent"}},
                        "edgeHub": {
                            "type": "docker",
                            "status": "running",
                            "restartPolicy": "always",
                            "settings": {"image": "edgefleet/hub"},
                        },
                    },
                    "modules": dict(modules),
                }
            },
            "$edgeHub": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "routes": dict(routes or {"up": "FROM /messages/* INTO $upstream"}),
                    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
                }
            },
        }
    }


class Layer(BaseModel):
    """A layered deployment: partial modules, routes and module desired properties."""

    modules: dict[str, Module] = Field(default_factory=dict)
    routes: dict[str, Route] = Field(default_factory=dict)
    module_desired: dict[str, dict[str, Any]] = Field(default_factory=dict)


def parse_layer(doc: Mapping[str, Any]) -> Layer:
    """Parse a layered configuration (``properties.desired.modules.x`` keys)."""
    mc = extract_modules_content(doc)
    agent = (mc.get("$edgeAgent") or {}).get("properties.desired", {})
    hub = (mc.get("$edgeHub") or {}).get("properties.desired", {})
    data = {
        "modules": agent.get("modules", {}),
        "routes": EdgeHubDesired._routes(hub.get("routes", {})),
        "module_desired": {
            k: v.get("properties.desired", {})
            for k, v in mc.items()
            if k not in ("$edgeAgent", "$edgeHub") and isinstance(v, Mapping)
        },
    }
    try:
        return Layer.model_validate(data)
    except ValidationError as exc:
        raise _format_error(exc, "modulesContent") from None
