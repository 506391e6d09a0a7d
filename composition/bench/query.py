"""``edgefleet bench query``: evaluations/s of compiled conditions vs. the naive tree walk."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from cloud_hub.query.evaluate import evaluate, evaluate_naive
from cloud_hub.query.parser import parse_condition
from cloud_hub.query.syntax import Condition, Expr

CONDITIONS = [
    "tags.environment = 'prod' AND properties.reported.lastUpdated > '2020'",
    "properties.reported.connectivity IN ['wired', 'wifi'] AND tags.building >= 40",
    "STARTSWITH(deviceId, 'edge-1') OR NOT IS_DEFINED(tags.location.region)",
    "moduleId = '$edgeAgent' AND configurations.[[deploy-1]].status = 'Applied' AND "
    "properties.desired.$version = properties.reported.lastDesiredVersion AND "
    "properties.reported.lastDesiredStatus.code = 200",
    " OR ".join(f"deviceId = 'edge-{i}'" for i in range(20)),
]


def make_fleet(count: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    fleet = []
    for i in range(count):
        tags: dict[str, Any] = {
            "environment": rng.choice(["prod", "dev", "test"]),
            "building": rng.randint(1, 60),
        }
        if rng.random() < 0.7:
            tags["location"] = {"region": rng.choice(["US", "EU", "APAC"])}
        version = rng.randint(1, 5)
        fleet.append(
            {
                "deviceId": f"edge-{i}",
                "moduleId": "$edgeAgent",
                "tags": tags,
                "configurations": {"deploy-1": {"status": rng.choice(["Applied", "Targeted"])}},
                "properties": {
                    "desired": {"$version": version},
                    "reported": {
                        "lastDesiredVersion": rng.choice([version, version - 1]),
                        "lastDesiredStatus": {"code": rng.choice([200, 400])},
                        "lastUpdated": f"20{rng.randint(15, 25)}-01-01",
                        "connectivity": rng.choice(["wired", "wifi", "cellular"]),
                    },
                },
            }
        )
    return fleet


def _rate(run: Callable[[], int], min_seconds: float) -> float:
    evaluations = 0
    start = time.perf_counter()
    while True:
        evaluations += run()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return evaluations / elapsed


def run_bench(twins: int, min_seconds: float = 0.3) -> dict[str, Any]:
    fleet = make_fleet(twins)
    results = []
    for text in CONDITIONS:
        condition = parse_condition(text)
        expr = condition.expr
        compiled_matches = sum(evaluate(condition, t) is True for t in fleet)
        naive_matches = sum(evaluate_naive(expr, t) is True for t in fleet)
        assert compiled_matches == naive_matches

        def compiled(condition: Condition = condition) -> int:
            for t in fleet:
                evaluate(condition, t)
            return len(fleet)

        def naive(expr: Expr = expr) -> int:
            for t in fleet:
                evaluate_naive(expr, t)
            return len(fleet)

        fast = _rate(compiled, min_seconds)
        slow = _rate(naive, min_seconds)
        results.append(
            {
                "condition": text if len(text) <= 80 else text[:77] + "...",
                "matches": compiled_matches,
                "compiled_evals_per_s": round(fast),
                "naive_evals_per_s": round(slow),
                "speedup": round(fast / slow, 2),
            }
        )
    return {"twins": twins, "results": results}
