"""Compiled routes and the route table: which endpoints a message goes to, at which priority."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_agent.edgehub.routes.compiler import Condition, compile_node
from edge_agent.edgehub.routes.errors import RouteError
from edge_agent.edgehub.routes.message import RouteMessage, source_key
from edge_agent.edgehub.routes.parser import ParsedRoute, Sink, parse_condition, parse_route
from edge_agent.edgehub.routes.values import TRUE

# IoT Edge gives plain string routes a priority below every explicit one (0 is the best).
DEFAULT_PRIORITY = 2_000_000_000


@dataclass(frozen=True)
class CompiledRoute:
    name: str
    parsed: ParsedRoute
    condition: Condition
    priority: int = DEFAULT_PRIORITY
    ttl_secs: int = 0  # 0: the storeAndForwardConfiguration TTL applies

    @property
    def sink(self) -> Sink:
        return self.parsed.sink

    @property
    def source_key(self) -> str:
        return source_key(self.parsed.source)

    def matches(self, message: RouteMessage) -> bool:
        """The route fires: its source is a prefix of the message's and its condition is true."""
        return message.source_key.startswith(self.source_key) and self.condition(message) == TRUE

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.parsed.source,
            "condition": self.parsed.condition,
            "sink": self.sink.to_dict(),
            "priority": None if self.priority == DEFAULT_PRIORITY else self.priority,
            "timeToLiveSecs": self.ttl_secs,
        }


@dataclass(frozen=True)
class RouteResult:
    sink: Sink
    priority: int
    ttl_secs: int
    route: str


def _always_true(_message: RouteMessage) -> int:
    return TRUE


def compile_route(
    text: str, name: str = "", priority: int = DEFAULT_PRIORITY, ttl_secs: int = 0
) -> CompiledRoute:
    """Parse and type-check a route; raises RouteError with the position of the first error."""
    parsed = parse_route(text)
    if parsed.condition_node is None:  # no WHERE: the condition is "true"
        condition: Condition = _always_true
    else:
        condition = compile_node(parsed.condition_node, text, parsed.source)
    return CompiledRoute(name, parsed, condition, priority, ttl_secs)


def compile_condition(text: str, source: str = "/messages") -> Condition:
    """A bare condition as a function of a message (``source`` is the route's source)."""
    return compile_node(parse_condition(text), text, source)


def route_from_desired(name: str, spec: Any) -> CompiledRoute:
    """A route from ``$edgeHub`` desired properties: a string or ``{route, priority, ttl}``."""
    if isinstance(spec, str):
        return compile_route(spec, name)
    if not isinstance(spec, Mapping) or not isinstance(spec.get("route"), str):
        raise RouteError(f"route '{name}' must be a string or an object with 'route'", "", 0)
    priority = spec.get("priority")
    ttl = spec.get("timeToLiveSecs") or 0
    if priority is None:  # IoT Edge's RouteSpec default: below every explicit priority
        return compile_route(spec["route"], name, DEFAULT_PRIORITY, _ttl(name, ttl))
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise RouteError(f"route '{name}': priority must be an integer 0-9", "", 0)
    return compile_route(spec["route"], name, priority, _ttl(name, ttl))


def _ttl(name: str, ttl: Any) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
        raise RouteError(f"route '{name}': timeToLiveSecs must be a non-negative integer", "", 0)
    return ttl


class RouteTable:
    """A device's routes; ``evaluate`` picks the best-priority matching route per endpoint."""

    def __init__(self, routes: list[CompiledRoute] | None = None) -> None:
        self.routes = list(routes or [])

    @classmethod
    def from_desired(cls, routes: Mapping[str, Any]) -> RouteTable:
        """Compile every route; a RouteError names the route that failed."""
        compiled = []
        for name, spec in routes.items():
            try:
                compiled.append(route_from_desired(name, spec))
            except RouteError as exc:
                raise RouteError(f"route '{name}': {exc}", "", 0) from exc
        return cls(compiled)

    def evaluate(self, message: RouteMessage) -> list[RouteResult]:
        best: dict[str, RouteResult] = {}
        for route in self.routes:
            if not route.matches(message):
                continue
            key = route.sink.key
            current = best.get(key)
            if current is None or route.priority < current.priority:
                best[key] = RouteResult(route.sink, route.priority, route.ttl_secs, route.name)
        return list(best.values())
