"""``edgefleet demo --duration 0``: the live view runs until it is interrupted."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from composition.demo.session import Demo
from composition.demo.view import live_view


def test_duration_zero_watches_until_interrupted(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), width=120)
    run = Demo(tmp_path, None, console)
    polls = []

    def poll(_seen: object) -> None:
        polls.append(1)
        if len(polls) == 5:  # what Ctrl-C does, past any fixed duration's first check
            raise KeyboardInterrupt

    run._check_alive = lambda: None  # type: ignore[method-assign]
    run.poll = poll  # type: ignore[method-assign,assignment]
    with pytest.raises(KeyboardInterrupt):
        run.watch(0, console)
    assert len(polls) == 5 and run.watched > 0


def test_live_view_title_says_how_it_ends() -> None:
    run = Demo(Path("."), None, None)
    text = io.StringIO()
    Console(file=text, width=120).print(live_view(run.seen, None))
    assert "Ctrl-C to stop" in text.getvalue()
    text = io.StringIO()
    Console(file=text, width=120).print(live_view(run.seen, 12.0))
    assert "12s left" in text.getvalue()
