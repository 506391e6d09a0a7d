"""The independent checker on hand-made message lists."""

from __future__ import annotations

from composition.chaos import stall
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


def test_a_stalled_recovery_names_the_missing_numbers_per_device_and_the_log_tails() -> None:
    snapshot = {"d0/load": [1, 2, 3, 4], "d1/load": list(range(1, 40))}
    stored = {"d0/load": {1, 2, 3, 4}, "d1/load": set(range(1, 40)) - {7, 20, 21, 22, 39}}
    gaps = stall.missing(snapshot, stored)
    assert gaps == {"d1/load": [7, 20, 21, 22, 39]}
    tails = {"d1/load": {"agent-2.log": ["WARNING something"], "failures": []}}
    found = stall.report(60, gaps, tails)
    assert found["devices"] == [
        {
            "device": "d1/load",
            "missing": 5,
            "missingSeqs": "7, 20-22, 39",
            "logs": {"agent-2.log": ["WARNING something"], "failures": []},
        }
    ]
    text = stall.render("agent-kill", found)
    assert "agent-kill: not every handed-over message was stored within 60 s" in text
    assert "d1/load: 5 missing: 7, 20-22, 39" in text and "    WARNING something" in text
    assert "d0/load" not in text
