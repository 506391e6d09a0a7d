"""IoT Hub's assignment rules: base choice, layering, merge of dotted paths, statuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloud_hub.deployments.assignment import (
    Candidate,
    changed_twins,
    choose,
    deployment_modules,
    merge,
    statuses,
    write_order,
)

T0 = datetime.fromtimestamp(0, UTC)  # creation times only order candidates


def base(
    cid: str, priority: int, minutes: int = 0, modules: dict[str, Any] | None = None
) -> Candidate:
    agent = {"schemaVersion": "1.1", "modules": modules or {cid: {"type": "process"}}}
    sections = {
        "$edgeAgent": {"properties.desired": agent},
        "$edgeHub": {
            "properties.desired": {
                "schemaVersion": "1.1",
                "routes": {"r": "FROM /* INTO $upstream"},
            }
        },
    }
    return Candidate(cid, priority, T0 + timedelta(minutes=minutes), False, sections)


def layer(cid: str, priority: int, sections: dict[str, Any], minutes: int = 0) -> Candidate:
    return Candidate(cid, priority, T0 + timedelta(minutes=minutes), True, sections)


@pytest.mark.parametrize(
    ("candidates", "want_base", "want_layers"),
    [
        ([], None, ()),
        ([base("a", 1)], "a", ()),
        ([base("a", 1), base("b", 2)], "b", ()),
        ([base("b", 2), base("a", 1)], "b", ()),  # input order does not matter
        ([base("old", 5, 0), base("new", 5, 10)], "new", ()),  # tie: most recently created
        ([base("new", 5, 10), base("old", 5, 0)], "new", ()),
        ([layer("l", 9, {})], None, ()),  # a layer without a base does nothing
        ([base("a", 5), layer("low", 4, {})], "a", ()),  # lower than the base: ignored
        ([base("a", 5), layer("eq", 5, {})], "a", ()),  # equal: ignored (must be higher)
        ([base("a", 5), layer("l2", 20, {}), layer("l1", 10, {})], "a", ("l1", "l2")),
        ([base("a", 5), layer("x", 10, {}, 9), layer("y", 10, {}, 1)], "a", ("y", "x")),
    ],
)
def test_choose(
    candidates: list[Candidate], want_base: str | None, want_layers: tuple[str, ...]
) -> None:
    selection = choose(candidates)
    assert (selection.base.config_id if selection.base else None) == want_base
    assert tuple(c.config_id for c in selection.layers) == want_layers


def test_merge_layers_dotted_paths_and_higher_priority_wins() -> None:
    b = base("b", 1, modules={"cam": {"type": "process", "settings": {"command": "cam"}}})
    mon = layer(
        "mon",
        10,
        {
            "$edgeAgent": {
                "properties.desired.modules.mon": {"type": "process", "settings": {"command": "m1"}}
            },
            "$edgeHub": {
                "properties.desired.routes.monRoute": "FROM /messages/modules/mon/* INTO $upstream"
            },
            "mon": {"properties.desired": {"interval": 5, "level": "info"}},
        },
    )
    override = layer(
        "override",
        20,
        {
            "$edgeAgent": {"properties.desired.modules.mon.settings.command": "m2"},
            "mon": {"properties.desired.level": "debug"},
        },
    )
    twins = merge(choose([override, b, mon]))
    agent = twins["$edgeAgent"]
    assert set(agent["modules"]) == {"cam", "mon"}
    assert agent["modules"]["mon"]["settings"]["command"] == "m2"
    assert twins["$edgeHub"]["routes"]["monRoute"].startswith("FROM /messages/modules/mon")
    assert twins["$edgeHub"]["routes"]["r"] == "FROM /* INTO $upstream"
    assert twins["mon"] == {"interval": 5, "level": "debug"}
    # the base's documents are not changed by merging
    assert set(b.sections["$edgeAgent"]["properties.desired"]["modules"]) == {"cam"}


def test_statuses_applied_and_targeted() -> None:
    cands = [base("a", 1), base("b", 2), layer("l", 5, {}), layer("low", 1, {})]
    got = statuses(cands, choose(cands))
    assert got == {
        "a": {"status": "Targeted"},
        "b": {"status": "Applied"},
        "l": {"status": "Applied"},
        "low": {"status": "Targeted"},
    }


def test_changed_twins_ignores_metadata_and_equal_documents() -> None:
    current: dict[str, dict[str, Any]] = {
        "$edgeAgent": {"x": 1, "$version": 4, "$metadata": {}},
        "$edgeHub": {"y": 1, "$version": 2},
    }
    target = {"$edgeAgent": {"x": 1}, "$edgeHub": {"y": 2}, "new": {"z": 3}}
    assert changed_twins(current, target) == {"$edgeHub": {"y": 2}, "new": {"z": 3}}


def test_write_order_and_deployment_modules() -> None:
    assert write_order(["b", "$edgeHub", "a", "$edgeAgent"]) == ["$edgeAgent", "$edgeHub", "a", "b"]
    assert deployment_modules(base("x", 1, modules={"m1": {}, "m2": {}}).sections) == ("m1", "m2")
    sections: dict[str, Any] = {
        "$edgeAgent": {
            "properties.desired.modules.mon": {},
            "properties.desired.modules.cam.env": {},
        }
    }
    assert deployment_modules(sections) == ("cam", "mon")
