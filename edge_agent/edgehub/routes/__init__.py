"""The IoT Edge route language: ``[SELECT *] FROM <source> [WHERE <condition>] INTO <sink>``."""

from edge_agent.edgehub.routes.errors import RouteError
from edge_agent.edgehub.routes.message import (
    TWIN_CHANGE_SOURCE,
    RouteMessage,
    encode_body,
    module_source,
)
from edge_agent.edgehub.routes.parser import ParsedRoute, Sink, parse_route
from edge_agent.edgehub.routes.table import (
    DEFAULT_PRIORITY,
    CompiledRoute,
    RouteResult,
    RouteTable,
    compile_condition,
    compile_route,
    route_from_desired,
)
from edge_agent.edgehub.routes.values import FALSE, TRUE, UNKNOWN

RESULT_NAMES = {TRUE: "true", FALSE: "false", UNKNOWN: "undefined"}

__all__ = [
    "DEFAULT_PRIORITY",
    "FALSE",
    "RESULT_NAMES",
    "TRUE",
    "TWIN_CHANGE_SOURCE",
    "UNKNOWN",
    "CompiledRoute",
    "ParsedRoute",
    "RouteError",
    "RouteMessage",
    "RouteResult",
    "RouteTable",
    "Sink",
    "compile_condition",
    "compile_route",
    "encode_body",
    "module_source",
    "parse_route",
    "route_from_desired",
]
