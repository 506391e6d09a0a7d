"""Property tests: no input crashes the parser, and evaluation never raises."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_hub.query import QueryError, evaluate, execute, parse_condition, parse_query
from cloud_hub.query.evaluate import evaluate_naive
from tests.support.query_population import make_twins, random_condition

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FRAGMENTS = [
    "SELECT",
    "select",
    "TOP",
    "*",
    "FROM",
    "devices",
    "devices.modules",
    "devices.jobs",
    "WHERE",
    "GROUP",
    "BY",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "NIN",
    "COUNT()",
    "AVG(",
    "(",
    ")",
    "[",
    "]",
    "[[",
    "]]",
    ",",
    ".",
    "=",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "/",
    "%",
    "'",
    "''",
    '"',
    "\\",
    "\\u00e9",
    "tags",
    "properties.reported.x",
    "$version",
    "deviceId",
    "0x1f",
    "1.5e3",
    "42",
    "true",
    "null",
    "undefined",
    "IS_DEFINED(",
    "STARTSWITH(",
    "SUBSTRING(",
    "CONCAT(",
    "'a''b'",
    "configurations.[[c-1]].status",
    "\n",
    " ",
]

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["env", "n", "x", "tags", "a"]), children, max_size=3)
    ),
    max_leaves=12,
)


def _parse_any(text: str) -> None:
    for parse in (parse_query, parse_condition):
        try:
            parse(text)
        except QueryError as exc:
            assert 1 <= exc.line and 1 <= exc.column and 0 <= exc.offset <= len(text)
            assert str(exc).startswith(f"line {exc.line}, column {exc.column}")


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_query_error(text: str) -> None:
    _parse_any(text)


@SETTINGS
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30), st.sampled_from([" ", ""]))
def test_token_soup_only_raises_query_error(parts: list[str], sep: str) -> None:
    _parse_any(sep.join(parts))


@SETTINGS
@given(st.integers(0, 10**6), JSON)
def test_compiled_and_naive_evaluation_agree_and_never_raise(seed: int, noise: Any) -> None:
    rng = random.Random(seed)
    text = random_condition(rng)
    condition = parse_condition(text)
    twins: list[Any] = make_twins(3, seed=seed) + [
        {"tags": {"env": noise, "n": noise}, "properties": {"reported": {"v": noise}}}
    ]
    for twin in twins:
        result = evaluate(condition, twin)
        naive = evaluate_naive(condition.expr, twin)
        assert result == (naive if type(naive) is bool else None), text


@SETTINGS
@given(
    st.lists(JSON, max_size=6),
    st.sampled_from(
        [
            "SELECT * FROM devices WHERE tags.env = 1 OR tags.x > 'a'",
            "SELECT tags.env AS e, COUNT() AS n, SUM(tags.n) AS s, MIN(tags.x) AS m FROM devices "
            "GROUP BY tags.env",
            "SELECT TOP 2 tags.a.b AS b, deviceId FROM devices WHERE IS_DEFINED(tags.a)",
            "SELECT AVG(tags.n) AS a, MAX(tags.env) AS m FROM devices WHERE NOT IS_NULL(tags.n)",
        ]
    ),
)
def test_execute_never_raises_on_any_documents(docs: list[Any], text: str) -> None:
    twins = [
        d if isinstance(d, dict) else {"tags": {"env": d, "n": d, "x": d, "a": d}} for d in docs
    ]
    rows = execute(parse_query(text), twins)
    assert isinstance(rows, list)
