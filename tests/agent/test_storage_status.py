"""The storage condition of the data directory, from disk samples and failed writes (pure)."""

from __future__ import annotations

from edge_agent.storage_status import DiskSample, Failure, decide, reported, worth_reporting

MIB = 1 << 20
FULL_STORE = Failure("edgeHubStore", "database or disk is full", free_bytes=4096)


def test_a_failed_write_makes_the_disk_full_and_names_what_is_refused() -> None:
    ok = decide(None, DiskSample(10 * MIB, 32 * MIB), [], now=100.0)
    assert not ok.full
    full = decide(ok, DiskSample(4096, 32 * MIB), [FULL_STORE], now=160.0)
    assert full.full and full.since == 160.0
    rep = reported(full, "/data")
    assert rep["state"] == "full" and rep["refusing"] == ["upstreamMessages"]
    assert rep["failedWrites"] == ["edgeHubStore"] and rep["freeBytes"] == 4096
    assert rep["lastError"] == "edgeHubStore: database or disk is full"
    assert rep["sinceUtc"] == "1970-01-01T00:02:40Z" and rep["dataDir"] == "/data"


def test_full_lasts_until_space_returns_and_keeps_its_start_time() -> None:
    full = decide(None, DiskSample(4096, 32 * MIB), [FULL_STORE], now=10.0)
    # a few KiB freed (a log rotated, a WAL checkpointed) is not space
    still = decide(full, DiskSample(200_000, 32 * MIB), [FULL_STORE], now=20.0)
    assert still.full and still.since == 10.0
    back = decide(still, DiskSample(4096 + MIB, 32 * MIB), [FULL_STORE], now=30.0)
    assert not back.full and back.since == 30.0
    assert reported(back, "/d")["refusing"] == [] and reported(back, "/d")["lastError"] is None


def test_no_free_bytes_is_full_without_a_failed_write() -> None:
    assert decide(None, DiskSample(0, 32 * MIB), [], now=1.0).full


def test_free_bytes_alone_are_reported_at_most_once_a_refresh() -> None:
    shown = decide(None, DiskSample(10 * MIB, 32 * MIB), [], now=0.0)
    later = decide(shown, DiskSample(9 * MIB, 32 * MIB), [], now=30.0)
    assert not worth_reporting(shown, later, refresh_secs=60)
    assert worth_reporting(shown, decide(shown, DiskSample(9 * MIB, 0), [], 61.0), 60)
    store_failed = Failure("edgeHubStore", "full", free_bytes=9 * MIB)
    failing = decide(shown, DiskSample(9 * MIB, 32 * MIB), [store_failed], now=31.0)
    assert failing.full
    assert worth_reporting(shown, failing, refresh_secs=60)
