"""Property tests: no input crashes the parser or compiler; only RouteError is raised."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.edgehub.routes import (
    RouteError,
    RouteMessage,
    compile_condition,
    compile_route,
    lexer,
)

_ATOMS = st.sampled_from(
    [
        "true",
        "false",
        "null",
        "undefined",
        "3",
        "-2.5",
        "0x1F",
        "1e3",
        "'s'",
        '"t"',
        "key",
        "$sys",
        "$body.a.b[0]",
        "{$x}",
        "as_number(key)",
        "concat('a', key)",
        "substring(k, 1)",
        "is_defined(x)",
        "(",
        ")",
        "AND",
        "OR",
        "NOT",
        "+",
        "-",
        "*",
        "/",
        "%",
        "=",
        "!=",
        "<>",
        "<",
        "<=",
        ">",
        ">=",
        "||",
        "??",
        ",",
        "@",
        "'unterminated",
        "\\",
        "[",
        "]",
        "{",
        "}",
    ]
)
_MSG = RouteMessage(
    "/messages/modules/m/outputs/o",
    b'{"a": {"b": [1, "x"]}}',
    {"key": "4", "k": "hello"},
    {"contentType": "application/json", "contentEncoding": "utf-8", "sys": "1"},
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80))
def test_arbitrary_text_only_raises_route_error(text: str) -> None:
    for candidate in (text, f"FROM /messages WHERE {text} INTO $upstream", f"FROM {text}"):
        try:
            route = compile_route(candidate)
        except RouteError as exc:
            assert exc.line >= 1 and exc.column >= 1
        else:
            assert route.condition(_MSG) in (-1, 0, 1)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ATOMS, max_size=12))
def test_token_soup_only_raises_route_error_and_evaluates(tokens: list[str]) -> None:
    text = " ".join(tokens)
    try:
        cond = compile_condition(text)
    except RouteError:
        return
    assert cond(_MSG) in (-1, 0, 1)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    for text in ("(" * 5000 + "true" + ")" * 5000, "NOT " * 5000 + "true", "- " * 5000 + "1"):
        try:
            compile_condition(text)
        except RouteError as exc:
            assert "nested" in exc.message


def _tokens_trying_every_rule(text: str) -> list[lexer.Token]:
    saved = lexer._ONLY_RULE
    lexer._ONLY_RULE = {}
    try:
        return lexer.tokenize(text)
    finally:
        lexer._ONLY_RULE = saved


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_ATOMS, st.sampled_from(["(", ")", "{", "}", ",", " "])), max_size=30))
def test_one_character_fast_path_gives_the_tokens_every_rule_gives(parts: list[str]) -> None:
    text = "".join(parts)
    assert lexer.tokenize(text) == _tokens_trying_every_rule(text)


def test_deep_nesting_is_refused_in_linear_time_not_by_a_crash() -> None:
    depth = 20_000
    text = "FROM /messages/* WHERE " + "(" * depth + "a = 1" + ")" * depth + " INTO $upstream"
    tokens = lexer.tokenize(text)
    assert len(tokens) == 2 * depth + 12  # the parentheses and 12 others (EOF included)
    try:
        compile_route(text)
    except RouteError as exc:
        assert "nested too deeply" in str(exc)
    else:
        raise AssertionError("a 20,000-deep condition compiled")
