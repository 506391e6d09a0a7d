"""Route semantics a user relies on: sources, sinks, priorities, $body, system properties."""

from __future__ import annotations

import json

import pytest

from edge_agent.edgehub.routes import (
    FALSE,
    TRUE,
    UNKNOWN,
    RouteError,
    RouteMessage,
    RouteTable,
    compile_condition,
    compile_route,
    encode_body,
    module_source,
    route_from_desired,
)


def _msg(
    source: str = "/messages/modules/m1/outputs/out1",
    body: object = None,
    props: dict[str, str | None] | None = None,
    sysprops: dict[str, str | None] | None = None,
    encoding: str = "utf-8",
) -> RouteMessage:
    raw = json.dumps(body) if body is not None else ""
    system: dict[str, str | None] = {"contentType": "application/json", "contentEncoding": encoding}
    system.update(sysprops or {})
    return RouteMessage(source, encode_body(raw, encoding), props or {}, system)


@pytest.mark.parametrize(
    ("route_source", "message_source", "fires"),
    [
        ("/messages/modules/m1*", module_source("m1", "o"), True),
        ("/messages/modules/m1*", module_source("m10", "o"), False),
        ("/messages/modules/m1", module_source("m1"), True),
        ("/messages/modules/m1/*", module_source("m1", "o"), True),
        ("/messages/modules/m1/outputs/o", module_source("m1", "o"), True),
        ("/messages/modules/m1/outputs/o", module_source("m1", "o2"), False),
        ("/messages/modules/m1/outputs/*", module_source("m1", "o2"), True),
        ("/messages/*", "/messages", True),
        ("/messages/*", module_source("x", "y"), True),
        ("/*", "/twinChangeNotifications", True),
        ("/messages", "/twinChangeNotifications", False),
        ("/MESSAGES/modules/M1", module_source("m1", "o"), True),
    ],
)
def test_source_prefix_matching_stops_at_segment_boundaries(
    route_source: str, message_source: str, fires: bool
) -> None:
    route = compile_route(f"FROM {route_source} INTO $upstream")
    assert route.matches(_msg(message_source)) is fires


def test_best_priority_wins_per_endpoint_and_other_endpoints_still_get_the_message() -> None:
    table = RouteTable.from_desired(
        {
            "low": {
                "route": "FROM /messages/* INTO $upstream",
                "priority": 5,
                "timeToLiveSecs": 60,
            },
            "high": {
                "route": "FROM /messages/modules/m1/* WHERE level = 'alert' INTO $upstream",
                "priority": 0,
                "timeToLiveSecs": 10,
            },
            "plain": 'FROM /messages/modules/m1/* INTO BrokeredEndpoint("/modules/m2/inputs/in")',
        }
    )
    results = {r.sink.key: r for r in table.evaluate(_msg(props={"level": "alert"}))}
    assert results["$upstream"].route == "high"
    assert (results["$upstream"].priority, results["$upstream"].ttl_secs) == (0, 10)
    assert results["module:m2/in"].sink.module == "m2"
    quiet = {r.sink.key: r for r in table.evaluate(_msg(props={"level": "info"}))}
    assert quiet["$upstream"].route == "low"


def test_route_objects_validate_priority_and_ttl() -> None:
    with pytest.raises(RouteError):
        route_from_desired("r", {"route": "FROM /* INTO $upstream", "priority": 10})
    with pytest.raises(RouteError):
        route_from_desired("r", {"route": "FROM /* INTO $upstream", "timeToLiveSecs": -1})
    with pytest.raises(RouteError, match="route 'bad'"):
        RouteTable.from_desired({"bad": "FROM /* WHERE x > 1 INTO $upstream"})


def test_application_property_shadows_system_property_unless_braced() -> None:
    msg = _msg(props={"$messageId": "app"}, sysprops={"messageId": "sys"})
    assert compile_condition("$messageId = 'app'")(msg) == TRUE
    assert compile_condition("{$messageId} = 'sys'")(msg) == TRUE
    assert (
        compile_condition("$connectionModuleId = 'm1'")(_msg(sysprops={"connectionModuleId": "m1"}))
        == TRUE
    )


@pytest.mark.parametrize("encoding", ["utf-8", "UTF-16", "utf-32"])
def test_body_queries_need_json_and_a_supported_encoding(encoding: str) -> None:
    cond = compile_condition("$body.sensor.readings[1] > 20 AND $body.sensor.name = 'ü'")
    assert (
        cond(_msg(body={"sensor": {"readings": [1, 25], "name": "ü"}}, encoding=encoding)) == TRUE
    )
    not_json = _msg(body={"sensor": {"readings": [1, 25]}}, sysprops={"contentType": "text/plain"})
    assert cond(not_json) == UNKNOWN
    bad_enc = _msg(body={"sensor": {"readings": [1, 25]}}, sysprops={"contentEncoding": "latin-1"})
    assert cond(bad_enc) == UNKNOWN


def test_three_valued_logic_only_true_fires() -> None:
    route = compile_route("FROM /* WHERE missing = 'x' OR false INTO $upstream")
    assert route.condition(_msg()) == UNKNOWN
    assert not route.matches(_msg())
    assert compile_condition("NOT (missing = 'x') OR true")(_msg()) == TRUE
    assert compile_condition("missing = 'x' AND false")(_msg()) == FALSE


def test_precedence_follows_iot_edge() -> None:
    assert compile_condition("2 + 3 * 4 = 14")(_msg()) == TRUE
    assert compile_condition("NOT false = true")(_msg()) == TRUE  # (NOT false) = true
    assert compile_condition("true OR false AND false")(_msg()) == TRUE
    assert compile_condition("'a' || 'b' = 'ab'")(_msg()) == TRUE


def test_type_errors_report_the_operator_position() -> None:
    with pytest.raises(RouteError) as info:
        compile_route("FROM /messages\nWHERE temp > 100\nINTO $upstream")
    assert (info.value.line, info.value.column) == (2, 12)


def test_twin_change_includes_only_on_twin_change_routes() -> None:
    ok = compile_route(
        "FROM /twinChangeNotifications WHERE twin_change_includes(properties.reported.a) "
        "INTO $upstream"
    )
    twin = _msg("/twinChangeNotifications", body={"properties": {"reported": {"a": 1}}})
    assert ok.matches(twin)
    with pytest.raises(RouteError, match="twin_change_includes"):
        compile_route(
            "FROM /messages WHERE twin_change_includes(properties.reported.a) INTO $upstream"
        )


def test_sinks_are_upstream_or_brokered_endpoints() -> None:
    route = compile_route("FROM /* INTO BrokeredEndpoint('/modules/filter/inputs/input1')")
    assert (route.sink.module, route.sink.input) == ("filter", "input1")
    for bad in ("FROM /* INTO $downstream", 'FROM /* INTO Other("/modules/a/inputs/b")'):
        with pytest.raises(RouteError):
            compile_route(bad)
