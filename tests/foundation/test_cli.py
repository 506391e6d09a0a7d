"""The `edgefleet` entry point as a user runs it."""

import subprocess
import sys

from edgefleet import __version__


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "composition.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_version_prints_package_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == __version__


def test_help_lists_command_groups() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for group in ("hub", "device", "twin", "query", "route", "models", "agent", "bench"):
        assert group in result.stdout


def test_unknown_command_fails_with_one_clear_line() -> None:
    result = run_cli("no-such-command")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
