"""What the database does for queries (index lookups on tags, GROUP BY counted in SQL) gives
exactly what the evaluator gives, on random fleets, on real SQLite and PostgreSQL."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import update

from cloud_hub.hub import Hub
from cloud_hub.models import TwinRow
from cloud_hub.query import execute, parse_query
from cloud_hub.twin_query import Queries
from tests.hub.conftest import hub, pg_url  # noqa: F401  (the same database fixtures)
from tests.support.query_population import PATHS, make_twins, random_condition

# Keys json_tree spells bare, quoted (SQLite 3.39+) or that need escaping in a JSON path.
AWKWARD_KEYS = ["site_id", "x-y", "é", "A1", "1a", "a'b"]
GROUP_PATHS = [
    *(".".join(p) for p in PATHS),
    "tags.loc",
    "capabilities.iotEdge",
    "status",
    "version",
    "moduleId",
    "tags.site_id",
    "tags.é",
    "tags.list[0]",
]
DEVICES = 90


class Evaluator(Queries):
    """The hub's queries with nothing pushed into SQL: every twin goes through the evaluator."""

    def _prefilter(self, query: Any) -> None:
        return None

    def _counted_in_sql(self, query: Any) -> None:
        return None


def _awkward(rng: random.Random, tags: dict[str, Any]) -> dict[str, Any]:
    for key in AWKWARD_KEYS:
        if rng.random() < 0.4:
            tags[key] = rng.choice(["prod", "1", 1, 1.0, True, None, {"k": 1}, [1]])
    if rng.random() < 0.3:
        tags["list"] = [rng.choice(["a", 1, None])]
    return tags


@pytest.fixture
def fleet(hub: Hub) -> Hub:  # noqa: F811
    """Device and module twins with every JSON type at the queried paths, written, rewritten
    and partly deleted (the SQLite tag index follows each write through its triggers)."""
    rng = random.Random(11)
    docs = make_twins(DEVICES, seed=5)
    ids = [f"d{i:03d}-{rng.choice(['a', 'B', 'z'])}" for i in range(len(docs))]
    hub.registry.create_devices(
        [(i, {"capabilities": {"iotEdge": n % 4 == 0}}, {}) for n, i in enumerate(ids)]
    )
    for rounds in range(2):
        with hub.db.write_conn() as conn:
            for device_id, doc in zip(ids, docs, strict=True):
                if rounds and rng.random() < 0.5:
                    continue
                for module_id in ("", "$edgeAgent"):
                    values = {
                        "tags": _awkward(rng, dict(doc["tags"])),
                        "reported": doc["properties"]["reported"],
                        "version": doc["$version"] + rounds,
                    }
                    conn.execute(
                        update(TwinRow)
                        .where(TwinRow.device_id == device_id, TwinRow.module_id == module_id)
                        .values(values)
                    )
        docs = make_twins(DEVICES, seed=6)
    hub.twins.patch_twin(ids[1], None, {"tags": {"env": "patched", "site_id": None}})
    for device_id in ids[-5:]:
        hub.registry.delete_device(device_id)
    return hub


def test_filters_with_index_lookups_select_what_the_evaluator_selects(fleet: Hub) -> None:
    pushed, reference = Queries(fleet.db), Evaluator(fleet.db)
    everything = {
        source: list(reference._twins(reference.parse(f"SELECT * FROM {source}"), None))
        for source in ("devices", "devices.modules")
    }
    rng = random.Random(3)
    conditions = [random_condition(rng) for _ in range(100)] + [
        "tags.env = 'patched'",
        "tags.site_id = 'prod' OR tags.site_id = 1",
        "tags.é IN ['prod', 1, true, null]",
        "tags.[[x-y]] = '1' AND tags.A1 = true",
        "tags.[[1a]] = 1.0",
        "tags.[[a'b]] = null",
        "tags.loc = 'prod'",
        "tags.list = 'a'",
    ]
    for n, condition in enumerate(conditions):
        source = "devices.modules" if n % 5 == 0 else "devices"
        text = f"SELECT * FROM {source} WHERE {condition}"
        expected = execute(parse_query(text), everything[source])
        got = [{**twin, "$version": twin["version"]} for twin in pushed.all(text, 9)]
        assert got == expected, text


def test_group_by_counts_give_what_the_evaluator_gives(fleet: Hub) -> None:
    pushed, reference = Queries(fleet.db), Evaluator(fleet.db)
    rng = random.Random(4)
    wheres = ["", "tags.env = 'prod'", "tags.site_id IN ['prod', '1']", "tags.n = 1"]
    counted = 0
    for n in range(60):
        paths = rng.sample(GROUP_PATHS, rng.choice([1, 1, 2]))
        source = rng.choice(["devices", "devices", "devices.modules"])
        where = rng.choice(wheres) or (random_condition(rng) if n % 6 == 0 else "")
        keys = ", ".join(f"{p} AS k{i}" for i, p in enumerate(paths))
        text = f"SELECT {keys}, COUNT() AS n FROM {source}"
        text += f" WHERE {where}" if where else ""
        text += f" GROUP BY {', '.join(paths)}"
        query = pushed.parse(text)
        counted += pushed._counted_in_sql(query) is not None
        assert pushed.all(text) == reference.all(text), text
    for text in [
        "SELECT COUNT() AS n FROM devices",
        "SELECT COUNT() FROM devices WHERE tags.env = 'nothing'",
        "SELECT TOP 2 tags.env, COUNT() FROM devices GROUP BY tags.env",
        "SELECT tags.env, COUNT() AS a, COUNT() AS b FROM devices.modules GROUP BY tags.env",
    ]:
        assert pushed._counted_in_sql(pushed.parse(text)) is not None
        assert pushed.all(text) == reference.all(text), text
    assert counted > 30  # most of the random ones were counted in SQL
