"""The parsers a hostile client reaches, fed mutated text: each must answer with a result or its
own error type, never another exception, and within a time budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from composition.hostile import inputs
from edgefleet import iothub_dialect, module_topics, protocol

SAMPLE_TWINS: list[dict[str, Any]] = [
    {"deviceId": "cam-1", "tags": {"location": {"region": "US"}, "list": ["a", 2]},
     "properties": {"reported": {"t": 25, "status": "ok"}, "desired": {}}},
    {"deviceId": "cam-2", "tags": {"x": None},
     "properties": {"reported": {"t": "hot", "status": None}, "desired": {}}},
]  # fmt: skip


def _route(text: str) -> object:
    from edge_agent.edgehub.routes import RouteMessage, compile_route

    route = compile_route(text)
    message = RouteMessage(
        "/messages/modules/filter/outputs/out1",
        b'{"a": {"b": "x"}, "z": [1, 2]}',
        {"temperature": "31", "a": "1"},
        {"$connectionDeviceId": "cam-1", "$contentType": "application/json"},
    )
    return route.matches(message)


def _query(text: str) -> object:
    from cloud_hub.query import execute, parse_query

    return execute(parse_query(text), SAMPLE_TWINS)


def _dialect(text: str) -> object:
    ident = iothub_dialect.IotHubIdentity("dev-1", "m1")
    return (
        iothub_dialect.inbound_publish(ident, text),
        iothub_dialect.inbound_filter(ident, text),
        iothub_dialect.outbound_topic(ident, text),
    )


def _topic(text: str) -> object:
    return protocol.parse_topic(text), protocol.message_from_topic(text, b"{}")


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[str], object]
    seeds: list[str]
    expected_errors: tuple[type[BaseException], ...]


def targets() -> list[Target]:
    from cloud_hub.query import QueryError
    from edge_agent.edgehub.routes import RouteError

    proto = (protocol.ProtocolError,)
    return [
        Target("route language", _route, inputs.ROUTE_SEEDS, (RouteError,)),
        Target("query language", _query, inputs.QUERY_SEEDS, (QueryError,)),
        Target("device topics", _topic, inputs.TOPIC_SEEDS, proto),
        Target("module topics", module_topics.parse_local, inputs.TOPIC_SEEDS, proto),
        Target("IoT Hub dialect topics", _dialect, inputs.TOPIC_SEEDS, proto),
    ]


@dataclass
class TargetReport:
    target: str
    inputs: int = 0
    rejected: int = 0
    crashes: int = 0
    slow: int = 0
    slowest_ms: float = 0.0
    examples: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "inputs": self.inputs,
            "rejected": self.rejected,
            "crashes": self.crashes,
            "slow": self.slow,
            "slowestMs": round(self.slowest_ms, 2),
            "examples": self.examples,
        }


def fuzz(target: Target, count: int, seed: int, budget_s: float = 1.0) -> TargetReport:
    """Feed ``count`` inputs to ``target``; an input over ``budget_s`` seconds counts as slow."""
    report = TargetReport(target.name)
    for text in inputs.text_inputs(target.seeds, count, seed):
        report.inputs += 1
        start = time.perf_counter()
        try:
            target.run(text)
        except target.expected_errors:
            report.rejected += 1
        except Exception as exc:  # noqa: BLE001 - what the fuzzer looks for
            report.crashes += 1
            if len(report.examples) < 5:
                report.examples.append(f"{text[:200]!r}: {type(exc).__name__}: {exc}"[:400])
        took = time.perf_counter() - start
        report.slowest_ms = max(report.slowest_ms, took * 1000)
        if took > budget_s:
            report.slow += 1
            if len(report.examples) < 5:
                report.examples.append(f"{text[:200]!r}: took {took:.2f} s")
    return report
