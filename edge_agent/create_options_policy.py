"""The device operator's allow-list for Docker ``createOptions``.

A deployment comes from the hub; the box belongs to its operator. With ``enforce: true`` in
the agent's ``create_options_policy``, a docker module whose createOptions reach outside the
container further than the operator allows (privileged mode, host namespaces, a bind of a host
path, a host device, an added capability, a security option, another container's volumes) makes
the agent refuse the whole deployment, as IoT Edge refuses an invalid one (code 400), naming
each offending JSON path and the setting that would allow it. The box keeps running what it ran.

``violations`` is pure: it takes the parsed createOptions of each module and the policy.
Keys not named here (port bindings, environment, labels, memory limits, ...) are not checked.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

HOST_NAMESPACE_KEYS = ("PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode")


class CreateOptionsPolicy(BaseModel):
    """What docker modules may ask for; off unless ``enforce`` is true."""

    model_config = ConfigDict(extra="forbid")

    enforce: bool = False
    allow_privileged: bool = False
    allow_host_network: bool = False
    allow_host_namespaces: bool = Field(
        default=False, description="PidMode, IpcMode, UTSMode, UsernsMode, CgroupnsMode 'host'"
    )
    allow_gpus: bool = Field(default=False, description="HostConfig.DeviceRequests")
    bind_sources: list[str] = Field(
        default_factory=list, description="Host paths that may be bound (each and below it)"
    )
    devices: list[str] = Field(default_factory=list, description="Host devices (PathOnHost)")
    capabilities: list[str] = Field(default_factory=list, description="CapAdd names")
    security_options: list[str] = Field(default_factory=list, description="SecurityOpt entries")

    @field_validator("bind_sources", "devices")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.startswith("/"):
                raise ValueError(f"{path!r} is not an absolute host path")
        return [posixpath.normpath(p) for p in paths]

    @field_validator("capabilities")
    @classmethod
    def _capability_names(cls, names: list[str]) -> list[str]:
        return [capability_name(n) for n in names]


@dataclass(frozen=True)
class Violation:
    path: str  # JSON path inside the module, e.g. settings.createOptions.HostConfig.Binds[0]
    message: str

    def text(self, module: str) -> str:
        return f"modules.{module}.{self.path}: {self.message}"


def capability_name(name: str) -> str:
    upper = name.strip().upper()
    return upper.removeprefix("CAP_")


def under(path: str, roots: list[str]) -> bool:
    """``path`` (made absolute and normal, so ``..`` cannot climb out) is a root or below one."""
    norm = posixpath.normpath(path)
    return any(norm == root or norm.startswith(root.rstrip("/") + "/") for root in roots)


def _bind_source(bind: str) -> str:
    """The host side of a ``Binds`` entry (``src:dst[:opts]``); a volume name has no slash."""
    return bind.split(":", 1)[0]


def _host_paths(host: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(JSON path, host path) of every bind and bind-like mount in a HostConfig."""
    for i, bind in enumerate(host.get("Binds") or []):
        source = _bind_source(str(bind))
        if source.startswith("/"):
            yield f"Binds[{i}]", source
    for i, mount in enumerate(host.get("Mounts") or []):
        if not isinstance(mount, Mapping):
            continue
        if str(mount.get("Type", "volume")).lower() == "bind":
            yield f"Mounts[{i}].Source", str(mount.get("Source", ""))
            continue
        # the local volume driver binds any host path with o=bind, device=<path>
        options = ((mount.get("VolumeOptions") or {}).get("DriverConfig") or {}).get("Options")
        device = str((options or {}).get("device", ""))
        if device.startswith("/"):
            yield f"Mounts[{i}].VolumeOptions.DriverConfig.Options.device", device


def _host_config_violations(
    host: Mapping[str, Any], policy: CreateOptionsPolicy
) -> Iterator[tuple[str, str]]:
    if host.get("Privileged") and not policy.allow_privileged:
        yield "Privileged", "privileged containers are not allowed (allow_privileged)"
    if str(host.get("NetworkMode", "")) == "host" and not policy.allow_host_network:
        yield "NetworkMode", "the host's network is not allowed (allow_host_network)"
    for key in HOST_NAMESPACE_KEYS:
        if str(host.get(key, "")) == "host" and not policy.allow_host_namespaces:
            yield key, "the host's namespaces are not allowed (allow_host_namespaces)"
    for where, source in _host_paths(host):
        if not under(source, policy.bind_sources):
            yield where, f"host path {source} is not allowed (bind_sources)"
    for i, device in enumerate(host.get("Devices") or []):
        on_host = str(device.get("PathOnHost", "")) if isinstance(device, Mapping) else ""
        if posixpath.normpath(on_host or "/") not in policy.devices:
            yield f"Devices[{i}].PathOnHost", f"host device {on_host} is not allowed (devices)"
    if host.get("DeviceCgroupRules"):
        yield "DeviceCgroupRules", "device cgroup rules are not allowed (use devices)"
    if host.get("DeviceRequests") and not policy.allow_gpus:
        yield "DeviceRequests", "GPU and other device requests are not allowed (allow_gpus)"
    for i, cap in enumerate(host.get("CapAdd") or []):
        if capability_name(str(cap)) not in policy.capabilities:
            yield f"CapAdd[{i}]", f"capability {cap} is not allowed (capabilities)"
    for i, option in enumerate(host.get("SecurityOpt") or []):
        if str(option) not in policy.security_options:
            yield f"SecurityOpt[{i}]", f"security option {option} is not allowed (security_options)"
    if host.get("VolumesFrom"):
        yield "VolumesFrom", "another container's volumes are not allowed"


def violations(create_options: Mapping[str, Any], policy: CreateOptionsPolicy) -> list[Violation]:
    """Every way ``create_options`` (Docker create JSON) exceeds ``policy``; [] when allowed."""
    if not policy.enforce:
        return []
    host = create_options.get("HostConfig") or {}
    if not isinstance(host, Mapping):
        return [Violation("settings.createOptions.HostConfig", "must be an object")]
    return [
        Violation(f"settings.createOptions.HostConfig.{where}", message)
        for where, message in _host_config_violations(host, policy)
    ]


def deployment_violations(
    modules: Mapping[str, Mapping[str, Any]], policy: CreateOptionsPolicy
) -> list[str]:
    """The violations of every module (name -> parsed createOptions), as one line each."""
    return [
        found.text(name)
        for name, options in sorted(modules.items())
        for found in violations(options, policy)
    ]
