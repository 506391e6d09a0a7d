"""The independent checker on hand-made message lists."""

from __future__ import annotations

from composition.chaos.checker import check, check_device
from composition.chaos.hubstore import parse_body


def test_everything_stored_once_in_order_is_clean() -> None:
    v = check_device("d", range(5), [0, 1, 2, 3, 4])
    assert (v.expected, v.stored, v.lost, v.duplicated, v.reordered, v.unexpected) == (
        5, 5, 0, 0, 0, 0,
    )  # fmt: skip
    assert v.ok


def test_missing_messages_are_lost() -> None:
    v = check_device("d", range(6), [0, 2, 5])
    assert (v.stored, v.lost, v.first_lost) == (3, 3, [1, 3, 4])
    assert not v.ok


def test_repeated_messages_are_duplicates_not_reorderings() -> None:
    v = check_device("d", range(3), [0, 1, 1, 2, 1])
    assert (v.stored, v.duplicated, v.reordered, v.lost) == (3, 2, 0, 0)
    assert not v.ok


def test_a_message_overtaken_by_a_later_one_is_reordered() -> None:
    v = check_device("d", range(5), [0, 2, 1, 4, 3])
    assert (v.stored, v.reordered, v.lost, v.duplicated) == (5, 2, 0, 0)


def test_stored_but_never_reported_accepted_is_unexpected_not_an_error() -> None:
    v = check_device("d", range(2), [0, 1, 2])
    assert (v.unexpected, v.lost) == (1, 0)
    assert v.ok


def test_totals_over_devices_include_devices_with_nothing_stored() -> None:
    verdict = check({"a": range(3), "b": range(2)}, [("a", 0), ("a", 1), ("a", 2), ("a", 2)])
    doc = verdict.as_json()
    assert (doc["devices"], doc["expected"], doc["stored"], doc["lost"], doc["duplicated"]) == (
        2, 5, 3, 2, 1,
    )  # fmt: skip
    assert [d["device"] for d in doc["perDevice"]] == ["a", "b"]


def test_interleaved_devices_are_judged_apart() -> None:
    verdict = check({"a": range(2), "b": range(2)}, [("b", 0), ("a", 0), ("b", 1), ("a", 1)])
    assert verdict.total("reordered") == 0 and verdict.total("lost") == 0


def test_only_load_generator_bodies_are_read() -> None:
    assert parse_body(b'{"device": "d", "seq": 3}') == ("d", 3)
    assert parse_body(b'{"t": 21}') is None
    assert parse_body(b"\xff") is None
