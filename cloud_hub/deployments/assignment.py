"""Which deployments a device gets, and the module twins that result (IoT Hub's rules, pure).

For one edge device, given the configurations whose target condition matches it:

1. **Base**: the base (not layered) deployment with the highest ``priority``; ties go to the most
   recently created (then the greater id, so the choice never depends on input order).
2. **Layers**: every matching layered deployment whose priority is *higher* than the base's, applied
   in ascending priority (ties: older first, so the newer one wins a conflicting key). A layered
   deployment with a lower or equal priority, or on a device with no base, does nothing there.
3. **Merge**: start from the base's ``modulesContent`` (module id -> ``properties.desired``); a
   layer's ``properties.desired`` replaces a module twin's desired document, a dotted key
   (``properties.desired.modules.sim``, ``properties.desired.routes.r``, any depth) sets that path.

Worked example: base ``B`` (priority 10) and layers ``L1`` (priority 20, sets
``properties.desired.modules.mon``) and ``L0`` (priority 5): the device runs B's modules plus
``mon``; ``L0`` shows ``Targeted``, ``B`` and ``L1`` show ``Applied``.

Device twin configurations (``deviceContent``) follow rule 1 among themselves and set their dotted
paths on the device twin's desired properties.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

DESIRED = "properties.desired"
APPLIED = "Applied"
TARGETED = "Targeted"


@dataclass(frozen=True)
class Candidate:
    """A configuration that matches the device and may be given to it."""

    config_id: str
    priority: int
    created: datetime
    layered: bool
    sections: Mapping[str, Mapping[str, Any]]  # module id -> {"properties.desired[.path]": value}


@dataclass(frozen=True)
class Selection:
    base: Candidate | None
    layers: tuple[Candidate, ...]

    @property
    def chosen(self) -> tuple[Candidate, ...]:
        return () if self.base is None else (self.base, *self.layers)

    def ids(self) -> frozenset[str]:
        return frozenset(c.config_id for c in self.chosen)


def _rank(candidate: Candidate) -> tuple[int, datetime, str]:
    return (candidate.priority, candidate.created, candidate.config_id)


def choose(eligible: Iterable[Candidate]) -> Selection:
    """The base and the layers that apply (rules 1 and 2 of the module docstring)."""
    items = list(eligible)
    bases = [c for c in items if not c.layered]
    if not bases:
        return Selection(None, ())
    base = max(bases, key=_rank)
    layers = sorted((c for c in items if c.layered and c.priority > base.priority), key=_rank)
    return Selection(base, tuple(layers))


def set_path(document: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """Set ``document[path[0]][path[1]]... = value``, replacing non-objects on the way."""
    node = document
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = copy.deepcopy(value)


def apply_sections(
    twins: dict[str, dict[str, Any]], sections: Mapping[str, Mapping[str, Any]]
) -> None:
    """Apply one configuration's module sections onto ``twins`` (module id -> desired)."""
    for module_id, section in sections.items():
        if not isinstance(section, Mapping):
            continue
        for key, value in section.items():
            if key == DESIRED:
                twins[module_id] = copy.deepcopy(dict(value)) if isinstance(value, Mapping) else {}
            elif key.startswith(DESIRED + "."):
                target = twins.setdefault(module_id, {})
                set_path(target, key[len(DESIRED) + 1 :].split("."), value)


def merge(selection: Selection) -> dict[str, dict[str, Any]]:
    """Module id -> desired properties of the selection (empty when there is no base)."""
    twins: dict[str, dict[str, Any]] = {}
    for candidate in selection.chosen:
        apply_sections(twins, candidate.sections)
    return twins


def statuses(matching: Iterable[Candidate], selection: Selection) -> dict[str, dict[str, str]]:
    """``configurations`` of the twin: Applied for the selection, Targeted for the rest."""
    chosen = selection.ids()
    return {
        c.config_id: {"status": APPLIED if c.config_id in chosen else TARGETED}
        for c in sorted(matching, key=lambda c: c.config_id)
    }


def strip_metadata(desired: Mapping[str, Any]) -> dict[str, Any]:
    """A desired document without ``$version`` / ``$metadata`` (what contents are compared on)."""
    return {k: v for k, v in desired.items() if not k.startswith("$")}


def changed_twins(
    current: Mapping[str, Mapping[str, Any]], target: Mapping[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The module twins whose desired properties must be replaced to reach ``target``: the
    target's own documents (shared by every device given the same target; never changed)."""
    return {
        module_id: desired
        for module_id, desired in target.items()
        if strip_metadata(current.get(module_id, {})) != desired
    }


def write_order(module_ids: Iterable[str]) -> list[str]:
    """``$edgeAgent`` first, ``$edgeHub`` next, then the modules by name (IoT Hub's order)."""
    ids = set(module_ids)
    head = [m for m in ("$edgeAgent", "$edgeHub") if m in ids]
    return head + sorted(ids - set(head))


def deployment_modules(sections: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """The custom modules a configuration's content runs (base or layered)."""
    agent = sections.get("$edgeAgent") or {}
    names: set[str] = set()
    whole = agent.get(DESIRED)
    if isinstance(whole, Mapping) and isinstance(whole.get("modules"), Mapping):
        names.update(whole["modules"])
    prefix = DESIRED + ".modules."
    for key, value in agent.items():
        if key.startswith(prefix):
            names.add(key[len(prefix) :].split(".")[0])
        elif key == DESIRED + ".modules" and isinstance(value, Mapping):
            names.update(value)
    return tuple(sorted(names))
