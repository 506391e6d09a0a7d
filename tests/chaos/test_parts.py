"""Pure parts of the harness: stale-run detection, nftables rule text, the relay's pacing."""

from __future__ import annotations

import random

import pytest

from composition.chaos.faults import loss_ruleset, one_way_ruleset
from composition.chaos.netns import run_mounts, stale_prefixes
from composition.chaos.relay import release_time


def test_only_names_of_runs_whose_process_is_gone_are_stale() -> None:
    names = ["efc1f-hub", "efc1f-net", "efc20-d0", "other-ns", "efcxyz-hub", "eth0"]
    assert stale_prefixes(names, alive={0x20}) == {"efc1f"}


def test_loss_rules_drop_the_given_share_both_ways() -> None:
    text = loss_ruleset(5)
    assert text.count("numgen random mod 100 < 5 drop") == 2
    assert "hook input" in text and "hook output" in text
    with pytest.raises(ValueError):
        loss_ruleset(101)


def test_one_way_rules_name_the_peer_and_direction() -> None:
    assert "hook output" in one_way_ruleset("10.0.0.1", "out")
    assert "ip daddr 10.0.0.1 drop" in one_way_ruleset("10.0.0.1", "out")
    assert "ip saddr 10.0.0.1 drop" in one_way_ruleset("10.0.0.1", "in")
    with pytest.raises(ValueError):
        one_way_ruleset("10.0.0.1", "both")


def test_relay_never_releases_a_chunk_before_the_previous_one() -> None:
    rng = random.Random(1)
    last = 0.0
    for now in [0.0, 0.001, 0.002, 0.003, 0.5]:
        due = release_time(now, last, 0.01, 0.04, rng)
        assert due >= last and now + 0.01 <= due <= max(last, now + 0.05)
        last = due


def test_only_mounts_under_the_runs_directory_are_the_runs() -> None:
    mounts = (
        "tmpfs /tmp/edgefleet-chaos-efc1f-ab/devices/chaos-0/agent-data tmpfs rw 0 0\n"
        "tmpfs /tmp/edgefleet-chaos-efc1f0-cd/devices/chaos-0/agent-data tmpfs rw 0 0\n"
        "proc /proc proc rw 0 0\n"
    )
    assert run_mounts("efc1f", mounts) == [
        "/tmp/edgefleet-chaos-efc1f-ab/devices/chaos-0/agent-data"
    ]


def test_an_unknown_scenario_is_refused_with_the_list() -> None:
    from typer.testing import CliRunner

    from composition.cli import app

    out = CliRunner().invoke(app, ["chaos", "run", "nope"])
    assert out.exit_code == 2
    assert "unknown scenario 'nope'" in out.output and "partition" in out.output
