"""The independent checker on hand-made message lists."""

from __future__ import annotations

from typing import Any

from composition.chaos import stall
from composition.chaos.checker import account_loss, check, check_device
from composition.chaos.hubstore import parse_body
from composition.chaos.twincheck import check_methods, check_patches, summarize


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


def test_evicted_messages_are_the_expected_loss_and_nothing_else_may_be_lost() -> None:
    # 0-9 sent; 3-6 evicted by the device's cap (one gap), the rest stored in order
    stored = [("a", s) for s in (0, 1, 2, 7, 8, 9)] + [("b", s) for s in range(3)]
    verdict = check({"a": range(10), "b": range(3)}, stored)
    ok = account_loss(verdict, {"a": 4})
    assert (ok["expectedLoss"], ok["unaccountedLoss"], ok["lossAccounted"]) == (4, 0, True)
    assert ok["lossPerDevice"][0] == {
        "device": "a", "expectedLoss": 4, "lost": 4, "unaccounted": 0, "lostRuns": 1,
    }  # fmt: skip
    # the device counted 3 evictions but 4 are missing: one loss is not accounted for
    short = account_loss(verdict, {"a": 3})
    assert (short["unaccountedLoss"], short["lossAccounted"]) == (1, False)
    # counted 5 but only 4 missing: the count is wrong too
    assert not account_loss(verdict, {"a": 5})["lossAccounted"]
    # a device with evictions reported but nothing in the run is not accounted either
    assert not account_loss(verdict, {"a": 4, "c": 2})["lossAccounted"]


def test_lost_runs_count_the_separate_gaps() -> None:
    assert check_device("d", range(10), [0, 3, 4, 8]).lost_runs == 3  # 1-2, 5-7, 9
    assert check_device("d", range(3), [0, 1, 2]).lost_runs == 0


def test_desired_patches_seen_in_order_with_the_last_one_pass() -> None:
    # a reconnect skipped patch 3 (the full twin with 4 came instead): fine, a twin is state
    seen: list[dict[str, Any]] = [{"version": 2, "chaosSeq": None}, {"version": 3, "chaosSeq": 1}]
    seen += [{"version": 4, "chaosSeq": 2}, {"version": 6, "chaosSeq": 4}]
    assert check_patches(4, seen) == {
        "patches": 4, "delivered": 3, "outOfOrder": 0, "lastArrived": True,
    }  # fmt: skip


def test_a_patch_seen_after_a_newer_one_is_out_of_order() -> None:
    seen = [{"version": 3, "chaosSeq": 1}, {"version": 5, "chaosSeq": 3}]
    seen += [{"version": 4, "chaosSeq": 2}, {"version": 6, "chaosSeq": 3}]
    out = check_patches(3, seen)
    assert out["outOfOrder"] == 1 and out["lastArrived"]
    # the same version twice is a replay, not progress
    assert check_patches(1, [{"version": 3, "chaosSeq": 1}] * 2)["outOfOrder"] == 1


def test_a_device_that_never_sees_the_last_patch_fails() -> None:
    out = check_patches(5, [{"version": 2, "chaosSeq": 1}, {"version": 3, "chaosSeq": 2}])
    assert (out["delivered"], out["lastArrived"]) == (2, False)
    assert summarize({"a": 5}, {"a": []}, [], 15)["twinMethodsOk"] is False


def test_method_calls_are_answered_failed_or_overdue() -> None:
    calls: list[dict[str, Any]] = [
        {"device": "a", "status": 200, "seconds": 0.1},
        {"device": "a", "status": 504, "seconds": 5.2},  # timed out at the hub: failed in time
        {"device": "a", "status": 0, "seconds": 40.0},  # no answer at all: a hang
        {"device": "b", "status": 200, "seconds": 16.0},  # answered, but far too late
    ]
    assert check_methods(calls, 15) == {"calls": 4, "answered": 2, "failed": 2, "overdue": 2}
    seen = {"a": [{"version": 2, "chaosSeq": 1}], "b": [{"version": 2, "chaosSeq": 1}]}
    figures = summarize({"a": 1, "b": 1}, seen, calls, 15)
    assert figures["twin"] == {"patches": 2, "delivered": 2, "outOfOrder": 0}
    assert [d["methods"]["overdue"] for d in figures["twinMethodsPerDevice"]] == [1, 1]
    assert figures["twinMethodsOk"] is False  # a call overran its deadline
    in_time = [c for c in calls if c["seconds"] < 15]
    assert summarize({"a": 1, "b": 1}, seen, in_time, 15)["twinMethodsOk"] is True
