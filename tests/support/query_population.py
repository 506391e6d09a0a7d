"""A seeded population of awkward twins and random conditions over them (query tests)."""

from __future__ import annotations

import json
import random
from typing import Any

STRINGS = [
    "prod",
    "Prod",
    "dev",
    "",
    "a%b",
    "a_b",
    "a\\b",
    "é",
    "zz",
    "10",
    "9",
    "2020-01-01",
    "2021-06",
    "it's",
    "ab",
    "abc",
    "PROD-1",
    "Z",
]
NUMBERS: list[Any] = [0, 1, -1, 2, 9, 10, 43, 0.5, 1.0, -2.5, 1e6, 2020]
OTHERS: list[Any] = [True, False, None, {"k": 1}, [1, "a"]]
PATHS = [
    ["deviceId"],
    ["$version"],
    ["tags", "env"],
    ["tags", "n"],
    ["tags", "name"],
    ["tags", "loc", "region"],
    ["properties", "reported", "v"],
    ["properties", "desired", "$version"],
    ["properties", "reported", "lastDesiredVersion"],
]


def _value(rng: random.Random) -> Any:
    pool = rng.choice([STRINGS, NUMBERS, OTHERS])
    return rng.choice(pool)


def make_twins(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Twins whose properties take every JSON type, or are missing."""
    rng = random.Random(seed)
    twins = []
    for i in range(count):
        twin: dict[str, Any] = {
            "deviceId": f"{rng.choice(STRINGS)}-{i}",
            "$version": rng.randint(1, 9),
        }
        tags: dict[str, Any] = {}
        for key in ("env", "n", "name"):
            if rng.random() < 0.8:
                tags[key] = _value(rng)
        if rng.random() < 0.6:
            tags["loc"] = {"region": rng.choice(STRINGS)} if rng.random() < 0.8 else _value(rng)
        twin["tags"] = tags
        desired: dict[str, Any] = {"$version": rng.randint(1, 5)}
        reported: dict[str, Any] = {}
        if rng.random() < 0.7:
            reported["v"] = _value(rng)
        if rng.random() < 0.7:
            reported["lastDesiredVersion"] = rng.choice([rng.randint(1, 5), "3", None])
        twin["properties"] = {"desired": desired, "reported": reported}
        twins.append(twin)
    return twins


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "undefined"


def _path(parts: list[str]) -> str:
    return ".".join(parts)


def random_condition(rng: random.Random, depth: int = 0) -> str:
    """A random condition text using every pushable (and some non-pushable) construct."""
    roll = rng.random()
    if depth < 3 and roll < 0.3:
        op = rng.choice(["AND", "OR"])
        return f"({random_condition(rng, depth + 1)} {op} {random_condition(rng, depth + 1)})"
    if depth < 3 and roll < 0.36:
        return f"NOT ({random_condition(rng, depth + 1)})"
    path = _path(rng.choice(PATHS))
    kind = rng.random()
    if kind < 0.55:
        op = rng.choice(["=", "!=", "<>", "<", "<=", ">", ">="])
        value = _value(rng)
        if rng.random() < 0.2:
            return f"{_literal(value)} {op} {path}"
        return f"{path} {op} {_literal(value)}"
    if kind < 0.7:
        values = ", ".join(_literal(_value(rng)) for _ in range(rng.randint(0, 4)))
        return f"{path} {rng.choice(['IN', 'IN', 'NIN'])} [{values}]"
    if kind < 0.82:
        fn = rng.choice(["STARTS_WITH", "ENDSWITH", "CONTAINS"])
        fragment = rng.choice(STRINGS + ["a", "%", "_", "\\", "P"])
        return f"{fn}({path}, {_literal(fragment)})"
    if kind < 0.9:
        return f"{path} = {_path(rng.choice(PATHS))}"
    return rng.choice(
        [f"IS_DEFINED({path})", f"IS_STRING({path})", f"LENGTH({path}) > 2", "true", "false"]
    )


def dumps(twin: dict[str, Any]) -> str:
    return json.dumps(twin, sort_keys=True)
