"""Running queries over twins: SELECT *, projections, COUNT()/GROUP BY, TOP."""

from typing import Any

from cloud_hub.query import execute, parse_query

TWINS: list[dict[str, Any]] = [
    {
        "deviceId": f"d{i}",
        "tags": {"env": env, "n": i},
        "properties": {"reported": {"telemetryConfig": {"status": status}}},
    }
    for i, (env, status) in enumerate(
        [
            ("prod", "Success"),
            ("prod", "Success"),
            ("dev", "Pending"),
            ("prod", "Error"),
            ("dev", "Success"),
            ("test", "Pending"),
        ]
    )
] + [{"deviceId": "bare"}]


def run(text: str) -> list[dict[str, Any]]:
    return execute(parse_query(text), iter(TWINS))


def test_select_star_returns_whole_twins() -> None:
    rows = run("SELECT * FROM devices WHERE tags.env = 'dev'")
    assert rows == [TWINS[2], TWINS[4]]
    assert run("SELECT * FROM devices") == TWINS


def test_projection_uses_aliases_and_omits_undefined() -> None:
    rows = run(
        "SELECT deviceId, tags.env AS environment FROM devices "
        "WHERE tags.n >= 5 OR deviceId = 'bare'"
    )
    assert rows == [{"deviceId": "d5", "environment": "test"}, {"deviceId": "bare"}]


def test_count_without_group_by_is_one_row() -> None:
    assert run("SELECT COUNT() AS total FROM devices") == [{"total": 7}]
    assert run("SELECT COUNT() AS total FROM devices WHERE tags.env = 'nope'") == [{"total": 0}]


def test_group_by_counts_like_iot_hub() -> None:
    rows = run(
        "SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices "
        "FROM devices WHERE IS_DEFINED(tags.env) "
        "GROUP BY properties.reported.telemetryConfig.status"
    )
    assert rows == [
        {"status": "Success", "numberOfDevices": 3},
        {"status": "Pending", "numberOfDevices": 2},
        {"status": "Error", "numberOfDevices": 1},
    ]


def test_group_by_undefined_key_forms_its_own_group_without_the_key() -> None:
    rows = run("SELECT tags.env AS env, COUNT() AS n FROM devices GROUP BY tags.env")
    assert rows == [
        {"env": "prod", "n": 3},
        {"env": "dev", "n": 2},
        {"env": "test", "n": 1},
        {"n": 1},
    ]


def test_group_by_several_keys_and_numeric_aggregates() -> None:
    rows = run(
        "SELECT tags.env AS env, COUNT() AS n, SUM(tags.n) AS s, AVG(tags.n) AS a, "
        "MIN(tags.n) AS lo, MAX(tags.n) AS hi FROM devices WHERE tags.env = 'prod' "
        "GROUP BY tags.env"
    )
    assert rows == [{"env": "prod", "n": 3, "s": 4, "a": 4 / 3, "lo": 0, "hi": 3}]


def test_min_max_over_strings_and_avg_of_nothing() -> None:
    rows = run(
        "SELECT MIN(deviceId) AS lo, MAX(deviceId) AS hi, AVG(tags.missing) AS a FROM devices"
    )
    assert rows == [{"lo": "bare", "hi": "d5"}]


def test_group_key_numbers_merge_int_and_float() -> None:
    twins: list[dict[str, Any]] = [{"v": 1}, {"v": 1.0}, {"v": True}, {"v": "1"}]
    rows = execute(parse_query("SELECT v, COUNT() AS n FROM devices GROUP BY v"), twins)
    assert rows == [{"v": 1, "n": 2}, {"v": True, "n": 1}, {"v": "1", "n": 1}]


def test_top_limits_rows() -> None:
    assert len(run("SELECT TOP 2 * FROM devices")) == 2
    assert run("SELECT TOP 1 deviceId FROM devices WHERE tags.env = 'dev'") == [{"deviceId": "d2"}]
    assert len(run("SELECT TOP 2 tags.env AS e, COUNT() AS n FROM devices GROUP BY tags.env")) == 2


def test_module_query_with_device_prefix() -> None:
    modules: list[dict[str, Any]] = [
        {
            "deviceId": "a",
            "moduleId": "$edgeAgent",
            "configurations": {"c1": {"status": "Applied"}},
        },
        {"deviceId": "a", "moduleId": "$edgeHub"},
        {
            "deviceId": "b",
            "moduleId": "$edgeAgent",
            "configurations": {"c1": {"status": "Targeted"}},
        },
    ]
    query = parse_query(
        "select deviceId from devices.modules where devices.modules.moduleId = '$edgeAgent' "
        "and configurations.[[c1]].status = 'Applied'"
    )
    assert execute(query, modules) == [{"deviceId": "a"}]
