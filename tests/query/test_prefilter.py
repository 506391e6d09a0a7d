"""The SQL prefilter never drops a matching twin, on real SQLite and real PostgreSQL."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import JSON, Column, Engine, Integer, MetaData, String, Table, create_engine, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from cloud_hub.query import compile_exact, compile_prefilter, evaluate, parse_condition
from cloud_hub.query.sql import json_path
from tests.support.query_population import make_twins, random_condition

PG_ADMIN = "host=127.0.0.1 port=5432 user=edgefleet password=edgefleet dbname=edgefleet_test"

metadata = MetaData()
twins_table = Table(
    "twins",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", String(128)),
    Column("version", Integer),
    Column("doc", JSON().with_variant(JSONB(), "postgresql")),
)


def resolver(path: list[str]) -> ColumnElement[Any] | None:
    if path == ["deviceId"]:
        return twins_table.c.device_id
    if path == ["$version"]:
        return twins_table.c.version
    return json_path(twins_table.c.doc, path)


TWINS = make_twins(400)
CONDITIONS = [random_condition(random.Random(seed)) for seed in range(400)] + [
    "tags.env = 'prod' AND properties.reported.v > 2",
    "tags.name > 'a' AND tags.name < 'b'",
    "tags.name >= 'Z'",
    "STARTS_WITH(tags.name, 'a%')",
    "STARTS_WITH(tags.name, 'a_')",
    "STARTS_WITH(tags.name, 'a\\\\')",
    "CONTAINS(tags.name, '%')",
    "ENDS_WITH(deviceId, '-7')",
    "deviceId IN ['prod-1', 'dev-2', 3]",
    "tags.n IN [1, 1.0, true, '1', null]",
    "tags.n = 1.0",
    "tags.n != 1",
    "tags.env = null",
    "tags.env >= null",
    "tags.env != null",
    "tags.n > 2020 OR tags.n < -1",
    "properties.desired.$version = properties.reported.lastDesiredVersion",
    "$version >= 5",
    "tags.loc.region = 'é'",
    "tags.loc = tags.loc",
]
EXACT_CONDITIONS = [
    "tags.env = 'prod'",
    "tags.env = '1' OR tags.n = '1'",
    "tags.env IN ['prod', 'dev', '10'] AND tags.loc.region = 'é'",
    "deviceId = 'dev-3' OR (tags.name = 'a%b' AND tags.env = '')",
    "tags.n = '{\"k\": 1}'",
    'tags.loc = \'{"region":"prod"}\'',
]


def _fill(engine: Engine) -> None:
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            twins_table.insert(),
            [
                {"id": i, "device_id": t["deviceId"], "version": t["$version"], "doc": t}
                for i, t in enumerate(TWINS)
            ],
        )


def _check_superset(engine: Engine) -> None:
    pushed = narrowed = 0
    with engine.connect() as conn:
        for text in CONDITIONS:
            condition = parse_condition(text)
            expected = {i for i, t in enumerate(TWINS) if evaluate(condition, t) is True}
            prefilter = compile_prefilter(condition, resolver)
            if prefilter is None:
                continue
            pushed += 1
            got = set(conn.execute(select(twins_table.c.id).where(prefilter)).scalars())
            missing = expected - got
            assert not missing, (text, [TWINS[i] for i in sorted(missing)[:3]])
            narrowed += len(got) < len(TWINS)
    # The pushed filters are worth having: most of them narrow the rows read.
    assert pushed > len(CONDITIONS) * 0.6, pushed
    assert narrowed > pushed * 0.8, (narrowed, pushed)


def test_prefilter_is_a_superset_on_sqlite() -> None:
    engine = create_engine("sqlite://")
    _fill(engine)
    _check_superset(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def pg_engine() -> Iterator[Engine]:
    name = f"edgefleet_t_query_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(
        f"postgresql+psycopg://edgefleet:edgefleet@127.0.0.1:5432/{name}", pool_pre_ping=True
    )
    try:
        _fill(engine)
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_prefilter_is_a_superset_on_postgresql(pg_engine: Engine) -> None:
    _check_superset(pg_engine)


def test_equality_prefilter_selects_exactly_the_matches_on_both(pg_engine: Engine) -> None:
    condition = parse_condition("tags.env = 'prod' OR deviceId = 'dev-3'")
    prefilter = compile_prefilter(condition, resolver)
    assert prefilter is not None
    expected = {i for i, t in enumerate(TWINS) if evaluate(condition, t)}
    sqlite = create_engine("sqlite://")
    _fill(sqlite)
    for engine in (sqlite, pg_engine):
        with engine.connect() as conn:
            got = set(conn.execute(select(twins_table.c.id).where(prefilter)).scalars())
        assert got == expected
    sqlite.dispose()


def _check_exact(engine: Engine) -> None:
    exact = 0
    with engine.connect() as conn:
        for text in CONDITIONS + EXACT_CONDITIONS:
            condition = parse_condition(text)
            where = compile_exact(condition, resolver)
            if where is None:
                continue
            exact += 1
            expected = {i for i, t in enumerate(TWINS) if evaluate(condition, t) is True}
            got = set(conn.execute(select(twins_table.c.id).where(where)).scalars())
            assert got == expected, (text, [TWINS[i] for i in sorted(got ^ expected)[:3]])
    assert exact > len(EXACT_CONDITIONS), exact


def test_exact_filters_select_exactly_the_matches_on_sqlite() -> None:
    engine = create_engine("sqlite://")
    _fill(engine)
    _check_exact(engine)
    engine.dispose()


def test_exact_filters_select_exactly_the_matches_on_postgresql(pg_engine: Engine) -> None:
    _check_exact(pg_engine)


def test_only_string_equality_and_membership_are_exact() -> None:
    for text in [
        "tags.n = 1",  # SQLite's json_extract gives 1 for true as well
        "tags.env = true",
        "tags.env != 'prod'",  # true in SQL between a number and a string
        "tags.env > 'a'",
        "tags.n = '{\"k\":1}'",  # an object's JSON text on SQLite
        "tags.list['0'] = 'a'",  # an array index on PostgreSQL
        "tags.env IN ['prod', 1]",
        "tags.env = 'prod' AND NOT tags.n = '1'",
        "STARTS_WITH(tags.env, 'p')",
    ]:
        assert compile_exact(parse_condition(text), resolver) is None, text
    assert compile_exact(parse_condition("tags.env = 'prod'"), resolver) is not None


def test_not_nin_and_arithmetic_are_not_pushed() -> None:
    for text in [
        "NOT tags.env = 'x'",
        "tags.env NIN ['x']",
        "tags.n + 1 = 2",
        "IS_DEFINED(tags.n)",
    ]:
        assert compile_prefilter(parse_condition(text), resolver) is None, text


def test_and_keeps_the_side_that_compiles_and_or_needs_both() -> None:
    assert (
        compile_prefilter(parse_condition("tags.env = 'x' AND NOT tags.n = 1"), resolver)
        is not None
    )
    assert compile_prefilter(parse_condition("tags.env = 'x' OR NOT tags.n = 1"), resolver) is None


def test_unmapped_paths_and_unsafe_keys_are_not_pushed() -> None:
    assert compile_prefilter(parse_condition("tags.list[0] = 1"), resolver) is None
    assert compile_prefilter(parse_condition("tags['a\"b'] = 1"), resolver) is None
    assert compile_prefilter(parse_condition("tags.n = 99999999999999999999"), resolver) is None
