"""Parsing: grammar coverage, normalisation of paths, and errors that point at the problem."""

import pytest

from cloud_hub.query import QueryError, parse_condition, parse_query
from cloud_hub.query.syntax import UNDEFINED, Aggregate, Binary, Call, In, Literal, Path, Unary


def test_select_star_from_devices() -> None:
    q = parse_query("SELECT * FROM devices")
    assert q.select is None and q.source == "devices" and q.where is None and q.top is None


@pytest.mark.parametrize("source", ["devices", "devices.modules", "devices.jobs"])
def test_sources(source: str) -> None:
    assert parse_query(f"select * from {source.upper()}").source == source


def test_keywords_are_case_insensitive() -> None:
    a = parse_query("SELECT deviceId FROM devices WHERE tags.a = 1 AND NOT tags.b IN ['x']")
    b = parse_query("select deviceId from Devices where tags.a = 1 and not tags.b in ['x']")
    assert a == b


def test_projection_with_aliases_and_default_names() -> None:
    q = parse_query("SELECT deviceId, properties.reported.x AS rx, tags.a.b FROM devices")
    assert q.select is not None
    assert [(i.expr, i.alias) for i in q.select] == [
        (Path(("deviceId",)), "deviceId"),
        (Path(("properties", "reported", "x")), "rx"),
        (Path(("tags", "a", "b")), "b"),
    ]


def test_aggregates_and_group_by() -> None:
    q = parse_query(
        "SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices,"
        " AVG(tags.n) AS a, SUM(tags.n) AS s, MIN(tags.n) AS lo, MAX(tags.n) AS hi FROM devices "
        "GROUP BY properties.reported.telemetryConfig.status"
    )
    assert q.is_aggregate
    assert q.select is not None
    assert q.select[1].expr == Aggregate("COUNT", None)
    assert q.select[2].expr == Aggregate("AVG", Path(("tags", "n")))
    assert q.group_by == (Path(("properties", "reported", "telemetryConfig", "status")),)


def test_count_without_alias_gets_a_positional_name() -> None:
    q = parse_query("SELECT COUNT() FROM devices")
    assert q.select is not None and q.select[0].alias == "$1"


def test_top() -> None:
    assert parse_query("SELECT TOP 5 * FROM devices").top == 5
    with pytest.raises(QueryError, match="integer after TOP"):
        parse_query("SELECT TOP x * FROM devices")


def test_where_text_is_kept() -> None:
    q = parse_query("SELECT * FROM devices WHERE tags.a = 'b'  ")
    assert q.where is not None and q.where.text == "tags.a = 'b'"


def test_strings_quote_escapes() -> None:
    assert parse_condition("deviceId='operator''sDevice'").expr == Binary(
        "=", Path(("deviceId",)), Literal("operator'sDevice")
    )
    assert parse_condition('a = "say ""hi"""').expr.right == Literal('say "hi"')  # type: ignore[union-attr]
    assert parse_condition(r"a = 'it\'s \u00e9\\'").expr.right == Literal("it's é\\")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("1.5", 1.5),
        ("-2", -2),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        (".5", 0.5),
        ("0x1F", 31),
        ("true", True),
        ("FALSE", False),
        ("null", None),
        ("undefined", UNDEFINED),
        ("'x'", "x"),
    ],
)
def test_literals(text: str, value: object) -> None:
    expr = parse_condition(f"tags.a = {text}").expr
    assert isinstance(expr, Binary)
    assert expr.right == Literal(value)


def test_paths() -> None:
    cases = {
        "properties.desired.$version": ("properties", "desired", "$version"),
        "$version": ("$version",),
        "configurations.[[my-config.v2]].status": ("configurations", "my-config.v2", "status"),
        "capabilities.iotEdge": ("capabilities", "iotEdge"),
        "devices.deviceId": ("deviceId",),
        "devices.modules.moduleId": ("moduleId",),
        "devices.jobs.status": ("status",),
        "tags.list[0]": ("tags", "list", 0),
        "tags['odd key']": ("tags", "odd key"),
        "tags.select.from": ("tags", "select", "from"),
    }
    for text, parts in cases.items():
        expr = parse_condition(f"{text} = 1").expr
        assert isinstance(expr, Binary)
        assert expr.left == Path(parts), text


def test_operator_precedence() -> None:
    expr = parse_condition("a = 1 OR b = 2 AND NOT c = 3")
    assert expr.expr == Binary(
        "OR",
        Binary("=", Path(("a",)), Literal(1)),
        Binary(
            "AND",
            Binary("=", Path(("b",)), Literal(2)),
            Unary("NOT", Binary("=", Path(("c",)), Literal(3))),
        ),
    )
    arith = parse_condition("a + 2 * 3 > (b - 1) / 2 % 4").expr
    assert isinstance(arith, Binary) and arith.op == ">"
    assert arith.left == Binary("+", Path(("a",)), Binary("*", Literal(2), Literal(3)))


@pytest.mark.parametrize("op", ["=", "!=", "<>", "<", "<=", ">", ">="])
def test_comparison_operators(op: str) -> None:
    expr = parse_condition(f"tags.a {op} 1").expr
    assert isinstance(expr, Binary) and expr.op == ("!=" if op == "<>" else op)


def test_in_nin_not_in() -> None:
    assert parse_condition("a IN ['x', 1, -2, true, null]").expr == In(
        Path(("a",)), ("x", 1, -2, True, None), False
    )
    assert parse_condition("a NIN []").expr == In(Path(("a",)), (), True)
    assert parse_condition("a NOT IN ['x']").expr == In(Path(("a",)), ("x",), True)


def test_function_names_and_aliases() -> None:
    expr = parse_condition("startswith(deviceId, 'a') and IS_DEFINED(tags.x)").expr
    assert isinstance(expr, Binary)
    assert expr.left == Call("STARTS_WITH", (Path(("deviceId",)), Literal("a")))
    assert expr.right == Call("IS_DEFINED", (Path(("tags", "x")),))


@pytest.mark.parametrize(
    ("text", "offset", "fragment"),
    [
        ("tags.a = ", 9, "expected a value"),
        ("tags.a = 'open", 9, "unterminated string"),
        ("tags.a IN ['a' 'b']", 15, "expected ',' or ']'"),
        ("tags.a IN 'a'", 10, "'[' starting the list"),
        ("nosuch(tags.a)", 0, "unknown function 'nosuch'"),
        ("IS_DEFINED(a, b)", 0, "takes 1 argument"),
        ("STARTS_WITH(a)", 0, "takes 2 argument"),
        ("tags.a = 1 tags.b = 2", 11, "expected AND, OR"),
        ("(tags.a = 1", 11, "')'"),
        ("tags.a = 1 AND", 14, "end of input"),
        ("tags. = 1", 6, "property name"),
        ("tags.a ~ 1", 7, "unexpected character '~'"),
        ("tags.a = 12abc", 9, "invalid number"),
        ("configurations.[[x", 15, "']]'"),
        ("a = 'bad \\q escape'", 9, "invalid escape"),
        ("COUNT() = 1", 0, "only allowed in SELECT"),
    ],
)
def test_condition_errors_name_position_and_expectation(
    text: str, offset: int, fragment: str
) -> None:
    with pytest.raises(QueryError) as info:
        parse_condition(text)
    assert info.value.offset == offset, str(info.value)
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"line 1, column {offset + 1} ")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("SELECT * FRM devices", "expected FROM but found 'FRM'"),
        ("SELECT * FROM things", "devices, devices.modules or devices.jobs"),
        ("SELECT * FROM devices.widgets", "modules or jobs"),
        ("SELECT FROM devices", "'*', a property path"),
        ("SELECT * FROM devices GROUP BY tags.a", "SELECT * cannot be combined with GROUP BY"),
        ("SELECT tags.a, COUNT() AS n FROM devices", "tags.a must appear in GROUP BY"),
        ("SELECT deviceId, deviceId FROM devices", "duplicate name 'deviceId'"),
        ("SELECT COUNT(tags.a) FROM devices", "COUNT takes no argument"),
        ("SELECT * FROM devices WHERE", "expected a value"),
        ("SELECT * FROM devices ORDER BY x", "WHERE, GROUP BY or the end"),
        ("SELECT * FROM devices WHERE a = 1 b = 2", "expected AND, OR, GROUP BY or the end"),
        ("SELECT deviceId tags.x FROM devices", "expected ',' or FROM but found 'tags'"),
        ("SELECT tags.x AS x, COUNT() AS n FROM devices GROUP BY tags.x tags.y", "',' or the end"),
        ("", "expected SELECT but found end of input"),
    ],
)
def test_query_errors(text: str, fragment: str) -> None:
    with pytest.raises(QueryError, match=None) as info:
        parse_query(text)
    assert fragment in str(info.value)


def test_error_position_on_later_line() -> None:
    with pytest.raises(QueryError) as info:
        parse_query("SELECT *\nFROM devices\n  WHERE tags.a = = 1")
    assert (info.value.line, info.value.column) == (3, 18)
    assert str(info.value).startswith("line 3, column 18")


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(QueryError, match="nested too deeply"):
        parse_condition("(" * 5000 + "a = 1" + ")" * 5000)
    with pytest.raises(QueryError, match="nested too deeply"):
        parse_condition("NOT " * 5000 + "a = 1")


def test_path_roots_name_every_property_a_condition_reads() -> None:
    from cloud_hub.query.syntax import path_roots

    text = (
        "tags.plant = '3' AND (NOT properties.reported.x > 1 OR STARTS_WITH(deviceId, 'a')) "
        "AND $version IN [1, 2] AND -capabilities.n < 0"
    )
    roots = path_roots(parse_condition(text).expr)
    assert roots == {"tags", "properties", "deviceId", "$version", "capabilities"}
    assert path_roots(parse_condition("true").expr) == set()
