"""Deployment templates to deployments, as iotedgedev's ``genconfig`` does.

Placeholders (``${VAR}``, ``$VAR``, ``${MODULES.name}``) are expanded strictly, the
``$schema-template`` marker is dropped and createOptions given as JSON objects become compact JSON
strings, split into ``createOptions``, ``createOptions01``, ... of at most 512 characters.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from edgefleet.deployment_check import (
    CHUNK_SIZE,
    DESIRED,
    DOTTED,
    MAX_CHUNKS,
    find_placeholders,
)
from edgefleet.manifest import ManifestError, substitute

_CHUNK_KEY = re.compile(r"^createOptions\d\d$")


class TemplateVariableError(ManifestError):
    """Placeholders of a template that no variable expands; ``names`` lists them."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(400, "template variables not set: " + ", ".join(names))


def genconfig(template: Mapping[str, Any], variables: Mapping[str, str]) -> dict[str, Any]:
    """A deployable manifest from a template; raises TemplateVariableError naming every
    placeholder that ``variables`` does not expand, ManifestError when createOptions is too long."""
    doc: dict[str, Any] = substitute(copy.deepcopy(dict(template)), variables)
    missing = sorted({name for _, name in find_placeholders(doc)})
    if missing:
        raise TemplateVariableError(missing)
    doc.pop("$schema-template", None)
    wrapped = doc.get("content")
    content: dict[str, Any] = wrapped if isinstance(wrapped, dict) else doc
    for settings, path in _all_settings(content):
        _chunk_create_options(settings, path)
    return doc


def _all_settings(content: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    mc = content.get("modulesContent", content.get("moduleContent"))
    agent = mc.get("$edgeAgent") if isinstance(mc, Mapping) else None
    if not isinstance(agent, Mapping):
        return
    path = "modulesContent.$edgeAgent"
    modules: list[tuple[Any, str]] = []
    desired = agent.get(DESIRED)
    if isinstance(desired, Mapping):
        for group in ("systemModules", "modules"):
            section = desired.get(group)
            if isinstance(section, Mapping):
                modules += [(m, f"{path}.{DESIRED}.{group}.{n}") for n, m in section.items()]
    modules += [(m, f"{path}.{k}") for k, m in agent.items() if k.startswith(DOTTED + "modules.")]
    for module, at in modules:
        settings = module.get("settings") if isinstance(module, Mapping) else None
        if isinstance(settings, dict):
            yield settings, at + ".settings"


def _chunk_create_options(settings: dict[str, Any], path: str) -> None:
    if any(_CHUNK_KEY.match(k) for k in settings):
        return  # already chunked by hand: left as written
    value = settings.get("createOptions")
    if isinstance(value, dict | list):
        value = json.dumps(value, separators=(",", ":"))
    if not isinstance(value, str):
        return
    chunks = [value[i : i + CHUNK_SIZE] for i in range(0, len(value), CHUNK_SIZE)] or [""]
    if len(chunks) > MAX_CHUNKS:
        raise ManifestError(
            400,
            f"createOptions is {len(value)} characters; IoT Edge takes at most "
            f"{MAX_CHUNKS} x {CHUNK_SIZE}",
            path + ".createOptions",
        )
    settings["createOptions"] = chunks[0]
    for i, chunk in enumerate(chunks[1:], start=1):
        settings[f"createOptions{i:02d}"] = chunk


def load_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments, ``export``, optional quotes)."""
    try:
        from dotenv import dotenv_values
    except ImportError:
        return _parse_env(open(path, encoding="utf-8").read())
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _parse_env(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        out[key.strip()] = value
    return out
