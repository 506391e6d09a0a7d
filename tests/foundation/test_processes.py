"""The benchmarks' child processes: ready checks and a stop that never leaves one running."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from composition.processes import Child, free_port, port_open

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True);"
    " time.sleep(60)",
]


def test_ready_then_stopped_with_sigterm() -> None:
    with Child("sleeper", SLEEPER, stop_timeout=10) as child:
        child.wait_ready(lambda: True, 5)
    assert child.proc.returncode is not None and child.proc.returncode < 0


def test_a_child_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    child = Child("stubborn", STUBBORN, log=log, stop_timeout=0.5)
    child.wait_ready(lambda: "up" in log.read_text(), 20, poll=0.05)
    started = time.monotonic()
    child.stop()
    assert child.proc.returncode == -9 and time.monotonic() - started < 10


def test_an_early_exit_is_reported_with_its_stderr() -> None:
    argv = [sys.executable, "-c", "import sys; sys.exit('no config')"]
    with Child("broken", argv, capture_stderr=True) as child, pytest.raises(RuntimeError) as err:
        child.wait_ready(lambda: False, 20)
    assert "broken exited: no config" in str(err.value)


def test_a_ready_check_that_raises_counts_as_not_ready() -> None:
    port = free_port()
    assert not port_open(port)

    def never() -> bool:
        raise OSError("refused")

    with Child("sleeper", SLEEPER, stop_timeout=10) as child, pytest.raises(RuntimeError) as err:
        child.wait_ready(never, 0.3, poll=0.05)
    assert "did not become ready" in str(err.value)
