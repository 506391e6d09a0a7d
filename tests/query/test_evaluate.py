"""Evaluation semantics: every operator and function, undefined and type-mismatch edge cases."""

from typing import Any

import pytest

from cloud_hub.query import evaluate, matches, parse_condition
from cloud_hub.query.evaluate import compile_expr, evaluate_naive

TWIN: dict[str, Any] = {
    "deviceId": "dev-1",
    "moduleId": "$edgeAgent",
    "$version": 7,
    "status": "enabled",
    "capabilities": {"iotEdge": True},
    "tags": {
        "environment": "prod",
        "building": 43,
        "ratio": 0.5,
        "zero": 0,
        "flag": False,
        "nothing": None,
        "location": {"region": "US", "plant": "Redmond43"},
        "list": ["a", "b", 3],
        "empty": "",
    },
    "properties": {
        "desired": {"$version": 4, "telemetry": {"interval": 30}},
        "reported": {
            "lastDesiredVersion": 4,
            "lastDesiredStatus": {"code": 200, "description": ""},
            "lastUpdated": "2021-03-04T05:06:07Z",
            "connectivity": "wifi",
        },
    },
    "configurations": {"my-config.v2": {"status": "Applied"}},
}


def ev(text: str, twin: dict[str, Any] = TWIN) -> bool | None:
    condition = parse_condition(text)
    result = evaluate(condition, twin)
    # The compiled closures and the reference tree walk always agree.
    naive = evaluate_naive(condition.expr, twin)
    assert result == (naive if type(naive) is bool else None), text
    return result


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # equality on every primitive type
        ("deviceId = 'dev-1'", True),
        ("deviceId = 'DEV-1'", False),
        ("tags.building = 43", True),
        ("tags.building = 43.0", True),
        ("tags.ratio = 0.5", True),
        ("capabilities.iotEdge = true", True),
        ("tags.flag = false", True),
        ("tags.nothing = null", True),
        ("tags.environment != 'dev'", True),
        ("tags.environment <> 'prod'", False),
        # ordering: numbers, strings (ordinal), booleans, null
        ("tags.building > 42", True),
        ("tags.building >= 43", True),
        ("tags.building < 43", False),
        ("tags.building <= 43", True),
        ("properties.reported.lastUpdated > '2020'", True),
        ("properties.reported.lastUpdated < '2021-03-04T05:06:08Z'", True),
        ("'B' < 'a'", True),
        ("false < true", True),
        ("tags.nothing <= null", True),
        ("tags.nothing < null", False),
        # paths: $version, nested $version, escaped configuration ids, arrays, devices. prefix
        ("$version = 7", True),
        ("properties.desired.$version = properties.reported.lastDesiredVersion", True),
        ("properties.reported.lastDesiredStatus.code = 200", True),
        ("configurations.[[my-config.v2]].status = 'Applied'", True),
        ("tags.list[0] = 'a'", True),
        ("tags.list[2] = 3", True),
        ("tags['location'].region = 'US'", True),
        ("devices.deviceId = 'dev-1'", True),
        ("moduleId = '$edgeAgent'", True),
        # logic
        ("tags.environment = 'prod' AND tags.building = 43", True),
        ("tags.environment = 'prod' AND tags.building = 44", False),
        ("tags.environment = 'dev' OR tags.building = 43", True),
        ("NOT tags.environment = 'dev'", True),
        ("NOT (tags.environment = 'dev' OR tags.building = 43)", False),
        # IN / NIN
        ("properties.reported.connectivity IN ['wired', 'wifi']", True),
        ("properties.reported.connectivity NIN ['wired', 'wifi']", False),
        ("properties.reported.connectivity NOT IN ['wired']", True),
        ("tags.building IN [1, 43.0]", True),
        ("tags.building IN ['43']", False),
        ("capabilities.iotEdge IN [1]", False),
        ("tags.environment IN []", False),
        # arithmetic
        ("tags.building + 1 = 44", True),
        ("tags.building - 3 = 40", True),
        ("tags.building * 2 = 86", True),
        ("tags.building / 2 = 21.5", True),
        ("tags.building % 10 = 3", True),
        ("-tags.building = -43", True),
        ("7 % -3 = 1", True),
        ("-7 % 3 = -1", True),
        ("properties.desired.telemetry.interval * 2 >= 60", True),
    ],
)
def test_true_and_false(text: str, expected: bool) -> None:
    assert ev(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        # missing properties are undefined, for every comparison, including != and NIN
        "tags.missing = 'x'",
        "tags.missing != 'x'",
        "tags.missing < 1",
        "tags.missing IN ['x']",
        "tags.missing NIN ['x']",
        "NOT tags.missing = 'x'",
        "nosuch.deep.path = 1",
        "tags.environment.sub = 'x'",  # path through a string
        "tags.list[7] = 'a'",
        "tags.list.a = 'a'",
        # type mismatches compare nothing
        "tags.building = '43'",
        "tags.building != '43'",
        "tags.environment > 1",
        "capabilities.iotEdge = 1",
        "tags.nothing = 0",
        "tags.nothing != 'x'",
        # objects and arrays are not comparable
        "tags.location = tags.location",
        "tags.list = tags.list",
        "tags.location IN ['US']",
        # arithmetic on non-numbers or by zero
        "tags.environment + 1 = 1",
        "tags.building / 0 = 1",
        "tags.building % 0 = 1",
        "-tags.environment = 1",
        # undefined propagates through AND/OR when not decided
        "tags.environment = 'prod' AND tags.missing = 1",
        "tags.environment = 'dev' OR tags.missing = 1",
        # a condition that is not boolean is not true
        "tags.environment",
        "tags.building",
        "undefined",
        "null",
        "'true'",
        "tags.building = undefined",
    ],
)
def test_undefined(text: str) -> None:
    assert ev(text) is None
    assert not matches(parse_condition(text), TWIN)


def test_three_valued_logic_decides_where_it_can() -> None:
    assert ev("tags.missing = 1 AND tags.environment = 'dev'") is False
    assert ev("tags.environment = 'dev' AND tags.missing = 1") is False
    assert ev("tags.missing = 1 OR tags.environment = 'prod'") is True
    assert ev("tags.environment = 'prod' OR tags.missing = 1") is True
    assert ev("NOT (tags.missing = 1 AND tags.environment = 'dev')") is True
    # AND/OR with a non-boolean operand is undefined unless the other side decides
    assert ev("tags.building AND true") is None
    assert ev("tags.building AND false") is False
    assert ev("tags.building OR true") is True


def test_missing_property_is_not_not_equal() -> None:
    # IoT Hub: devices without the tag are not matched by `!=` either.
    assert ev("tags.environment != 'prod'", {"tags": {}}) is None
    assert ev("NOT (tags.environment = 'prod')", {"tags": {}}) is None
    assert ev("NOT IS_DEFINED(tags.environment) OR tags.environment != 'prod'", {"tags": {}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IS_DEFINED(tags.environment)", True),
        ("IS_DEFINED(tags.nothing)", True),
        ("IS_DEFINED(tags.missing)", False),
        ("IS_NULL(tags.nothing)", True),
        ("IS_NULL(tags.missing)", False),
        ("IS_NULL(tags.zero)", False),
        ("IS_BOOL(tags.flag)", True),
        ("IS_BOOL(tags.zero)", False),
        ("IS_NUMBER(tags.ratio)", True),
        ("IS_NUMBER(tags.flag)", False),
        ("IS_NUMBER(tags.missing)", False),
        ("IS_STRING(tags.empty)", True),
        ("IS_STRING(tags.building)", False),
        ("IS_OBJECT(tags.location)", True),
        ("IS_OBJECT(tags.list)", False),
        ("IS_ARRAY(tags.list)", True),
        ("IS_ARRAY(tags.location)", False),
        ("IS_PRIMITIVE(tags.nothing)", True),
        ("IS_PRIMITIVE(tags.flag)", True),
        ("IS_PRIMITIVE(tags.location)", False),
        ("IS_PRIMITIVE(tags.missing)", False),
        ("is_defined(tags.environment)", True),
        ("STARTSWITH(deviceId, 'dev')", True),
        ("STARTS_WITH(deviceId, 'Dev')", False),
        ("ENDSWITH(deviceId, '-1')", True),
        ("ENDS_WITH(deviceId, 'x')", False),
        ("CONTAINS(tags.location.plant, 'mond')", True),
        ("CONTAINS(tags.location.plant, 'x')", False),
        ("LENGTH(deviceId) = 5", True),
        ("LENGTH(tags.empty) = 0", True),
        ("LOWER(tags.location.region) = 'us'", True),
        ("UPPER(tags.environment) = 'PROD'", True),
        ("CONCAT(tags.environment, '-', deviceId) = 'prod-dev-1'", True),
        ("SUBSTRING(deviceId, 1) = 'ev-1'", True),
        ("SUBSTRING(deviceId, 0, 3) = 'dev'", True),
        ("SUBSTRING(deviceId, 4, 100) = '1'", True),
        ("INDEX_OF(deviceId, '-') = 3", True),
        ("INDEX_OF(deviceId, 'x') = -1", True),
        ("ABS(-3) = 3", True),
        ("CEILING(1.2) = 2", True),
        ("FLOOR(-1.2) = -2", True),
        ("EXP(0) = 1", True),
        ("LOG(1) = 0", True),
        ("LOG10(100) = 2", True),
        ("POWER(2, 10) = 1024", True),
        ("SIGN(-4) = -1", True),
        ("SIGN(0) = 0", True),
        ("SQUARE(3) = 9", True),
        ("SQRT(16) = 4", True),
        ("AS_NUMBER('42') = 42", True),
        ("AS_NUMBER(' 1.5 ') = 1.5", True),
        ("AS_NUMBER(tags.building) = 43", True),
    ],
)
def test_functions(text: str, expected: bool) -> None:
    assert ev(text) is expected


@pytest.mark.parametrize(
    "text",
    [
        "STARTS_WITH(tags.building, '4')",
        "STARTS_WITH(tags.missing, 'a')",
        "ENDS_WITH(deviceId, 1)",
        "CONTAINS(tags.list, 'a')",
        "LENGTH(tags.building) = 2",
        "LOWER(tags.missing) = 'x'",
        "CONCAT(deviceId, 1) = 'dev-11'",
        "SUBSTRING(deviceId, '1') = 'x'",
        "ABS(tags.environment) = 1",
        "SQRT(-1) = 1",
        "LOG(0) = 1",
        "POWER(10, 1000) = 1",
        "AS_NUMBER('abc') = 1",
        "AS_NUMBER(true) = 1",
    ],
)
def test_functions_on_wrong_types_are_undefined(text: str) -> None:
    assert ev(text) is None


def test_compiled_condition_is_cached_and_reused() -> None:
    condition = parse_condition("tags.environment = 'prod'")
    assert evaluate(condition, TWIN) is True
    compiled = condition._compiled
    assert evaluate(condition, {"tags": {"environment": "dev"}}) is False
    assert condition._compiled is compiled


def test_compile_expr_returns_values() -> None:
    fn = compile_expr(parse_condition("tags.building * 2").expr)
    assert fn(TWIN) == 86


OR_CHAIN = "deviceId = 'a' OR deviceId = 'b' OR deviceId = 'c' OR deviceId = 'd'"


def test_long_or_of_equalities_keeps_three_valued_semantics() -> None:
    assert ev(OR_CHAIN, {"deviceId": "c"}) is True
    assert ev(OR_CHAIN, {"deviceId": "z"}) is False
    assert ev(OR_CHAIN, {}) is None
    assert ev(OR_CHAIN, {"deviceId": 5}) is None
    assert ev(f"NOT ({OR_CHAIN})", {"deviceId": "z"}) is True
    mixed = OR_CHAIN + " OR deviceId = 1"
    assert ev(mixed, {"deviceId": "z"}) is None
    assert ev(mixed, {"deviceId": 1}) is True
    assert ev(mixed + " OR tags.x = 1", {"deviceId": "b"}) is True
    many = " OR ".join(f"deviceId = 'd{i}'" for i in range(3000))
    assert ev(many, {"deviceId": "d2999"}) is True


def test_long_and_chain() -> None:
    chain = " AND ".join(f"tags.building > {i}" for i in range(40))
    assert ev(chain) is True
    assert ev(chain + " AND tags.missing = 1") is None
    assert ev(chain + " AND tags.missing = 1 AND tags.building = 0") is False
