"""Device and module twins through the service layer (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest

from cloud_hub import events
from cloud_hub.errors import DeviceNotFound, InvalidInput, ModuleNotFound, PreconditionFailed
from cloud_hub.hub import Hub


def _desired(twin: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in twin["properties"]["desired"].items() if not k.startswith("$")}


def test_merge_patch_semantics_and_versions(hub: Hub) -> None:
    hub.registry.create_device("d1")
    first = hub.twins.get_twin("d1")
    assert first["version"] == 1 and first["tags"] == {}
    assert first["properties"]["desired"]["$version"] == 1
    twin = hub.twins.patch_twin(
        "d1",
        None,
        {
            "tags": {"site": {"region": "west", "floor": 3}},
            "properties": {"desired": {"fps": 5, "camera": {"gain": 2, "mode": "day"}}},
        },
    )
    assert twin["tags"] == {"site": {"region": "west", "floor": 3}}
    assert _desired(twin) == {"fps": 5, "camera": {"gain": 2, "mode": "day"}}
    assert twin["properties"]["desired"]["$version"] == 2
    assert twin["version"] == 2
    # null deletes; nested objects merge; scalars replace
    twin = hub.twins.patch_twin(
        "d1",
        None,
        {
            "tags": {"site": {"floor": None}},
            "properties": {"desired": {"fps": None, "camera": {"gain": 4}}},
        },
    )
    assert twin["tags"] == {"site": {"region": "west"}}
    assert _desired(twin) == {"camera": {"gain": 4, "mode": "day"}}
    assert twin["properties"]["desired"]["$version"] == 3
    assert twin["version"] == 3
    assert twin["etag"] != first["etag"]


def test_metadata_at_every_level(hub: Hub) -> None:
    hub.registry.create_device("d1")
    hub.twins.patch_desired("d1", None, {"a": {"b": {"c": 1}}, "x": 1})
    twin = hub.twins.patch_desired("d1", None, {"a": {"b": {"d": 2}}})
    meta = twin["properties"]["desired"]["$metadata"]
    assert meta["$lastUpdatedVersion"] == 3
    assert meta["a"]["$lastUpdatedVersion"] == 3
    assert meta["a"]["b"]["$lastUpdatedVersion"] == 3
    assert meta["a"]["b"]["d"]["$lastUpdatedVersion"] == 3
    assert meta["a"]["b"]["c"]["$lastUpdatedVersion"] == 2  # untouched leaf keeps its stamp
    assert meta["x"]["$lastUpdatedVersion"] == 2
    assert meta["a"]["b"]["c"]["$lastUpdated"] <= meta["a"]["b"]["d"]["$lastUpdated"]
    assert meta["$lastUpdated"].endswith("Z")
    twin = hub.twins.patch_desired("d1", None, {"a": None})
    assert "a" not in twin["properties"]["desired"]["$metadata"]


def test_reported_patch_from_device(hub: Hub) -> None:
    hub.registry.create_device("d1", {"capabilities": {"iotEdge": True}})
    seen: list[Any] = []
    hub.events.subscribe(events.TwinReportedChanged, seen.append)
    assert hub.twins.patch_reported("d1", None, {"temp": 21.5, "fw": {"v": "1.0"}}) == 2
    assert hub.twins.patch_reported("d1", None, {"fw": {"v": "1.1"}}) == 3
    reported = hub.twins.get_twin("d1")["properties"]["reported"]
    assert reported["temp"] == 21.5 and reported["fw"] == {"v": "1.1"}
    assert reported["$version"] == 3
    assert reported["$metadata"]["fw"]["v"]["$lastUpdatedVersion"] == 3
    assert seen[-1] == events.TwinReportedChanged("d1", None, {"fw": {"v": "1.1"}}, 3)
    # module twins are separate documents
    assert hub.twins.patch_reported("d1", "$edgeAgent", {"lastDesiredVersion": 4}) == 2
    agent = hub.twins.get_device_side("d1", "$edgeAgent")
    assert agent["reported"] == {"lastDesiredVersion": 4, "$version": 2}
    assert "lastDesiredVersion" not in hub.twins.get_twin("d1")["properties"]["reported"]
    # the service side cannot write reported properties: they are ignored in a service patch
    twin = hub.twins.patch_twin("d1", None, {"properties": {"reported": {"temp": 0}}})
    assert twin["properties"]["reported"]["temp"] == 21.5


def test_desired_change_event_carries_patch_and_version(hub: Hub) -> None:
    hub.registry.create_device("d1", {"capabilities": {"iotEdge": True}})
    seen: list[Any] = []
    hub.events.subscribe((events.TwinDesiredChanged, events.TwinTagsChanged), seen.append)
    hub.twins.patch_twin("d1", "$edgeAgent", {"properties": {"desired": {"a": 1, "b": None}}})
    assert seen == [events.TwinDesiredChanged("d1", "$edgeAgent", {"a": 1, "b": None}, 2)]
    seen.clear()
    hub.twins.patch_twin("d1", None, {"tags": {"env": "prod"}})
    assert seen == [events.TwinTagsChanged("d1", None, {"env": "prod"})]
    seen.clear()
    # a replacement pushes the whole new document, with nulls for removed keys
    hub.twins.patch_desired("d1", None, {"old": 1, "keep": 1})
    seen.clear()
    twin = hub.twins.replace_twin("d1", None, {"properties": {"desired": {"keep": 2, "new": 3}}})
    assert _desired(twin) == {"keep": 2, "new": 3}
    assert twin["tags"] == {}
    (event,) = [e for e in seen if isinstance(e, events.TwinDesiredChanged)]
    assert event.patch == {"old": None, "keep": 2, "new": 3} and event.version == 3


def test_if_match_on_twins(hub: Hub) -> None:
    hub.registry.create_device("d1")
    etag = hub.twins.get_twin("d1")["etag"]
    hub.twins.patch_twin("d1", None, {"tags": {"a": 1}}, if_match=f'"{etag}"')
    with pytest.raises(PreconditionFailed):
        hub.twins.patch_twin("d1", None, {"tags": {"a": 2}}, if_match=f'"{etag}"')
    hub.twins.patch_twin("d1", None, {"tags": {"a": 2}}, if_match="*")
    assert hub.twins.get_twin("d1")["tags"] == {"a": 2}


def test_limits_and_invalid_patches_name_the_path(hub: Hub) -> None:
    hub.registry.create_device("d1")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tags": {"big": "x" * 4000, "big2": "y" * 4000, "big3": "z" * 1000}}, "tags"),
        ({"properties": {"desired": {f"k{i}": "v" * 3000 for i in range(12)}}}, "properties"),
        ({"tags": {"a.b": 1}}, "tags.a.b"),
        ({"tags": {"$x": 1}}, "tags.$x"),
        ({"tags": "flat"}, "tags"),
        ({"properties": {"desired": [1, 2]}}, "properties.desired"),
        ({"properties": "x"}, "properties"),
        ({"tags": {"s": "x" * 5000}}, "tags.s"),
    ]
    for body, path in cases:
        with pytest.raises(InvalidInput) as err:
            hub.twins.patch_twin("d1", None, body)
        assert err.value.path is not None and err.value.path.startswith(path), (body, err.value)
    deep: dict[str, Any] = {"v": 1}
    for _ in range(10):
        deep = {"n": deep}
    with pytest.raises(InvalidInput) as too_deep:
        hub.twins.patch_desired("d1", None, deep)
    assert "deeper than 10" in too_deep.value.message
    ok: dict[str, Any] = {"v": 1}
    for _ in range(9):
        ok = {"n": ok}
    hub.twins.patch_desired("d1", None, ok)
    with pytest.raises(InvalidInput) as reported:
        hub.twins.patch_reported("d1", None, {f"k{i}": "v" * 3000 for i in range(12)})
    assert reported.value.path == "properties.reported"
    # nothing above was stored
    assert hub.twins.get_twin("d1")["tags"] == {}


def test_missing_twins(hub: Hub) -> None:
    with pytest.raises(DeviceNotFound):
        hub.twins.get_twin("ghost")
    hub.registry.create_device("d1")
    with pytest.raises(ModuleNotFound):
        hub.twins.patch_reported("d1", "nope", {"a": 1})


def test_concurrent_patches_lose_nothing(hub: Hub) -> None:
    from concurrent.futures import ThreadPoolExecutor

    hub.registry.create_device("d1")

    def patch(i: int) -> int:
        hub.twins.patch_desired("d1", None, {f"k{i}": i})
        return hub.twins.patch_reported("d1", None, {f"r{i}": i})

    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(patch, range(40)))
    twin = hub.twins.get_twin("d1")
    assert len(_desired(twin)) == 40
    assert twin["properties"]["desired"]["$version"] == 41
    assert sorted(versions) == list(range(2, 42))
    assert twin["version"] == 81
