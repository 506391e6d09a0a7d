"""What a scenario reports when the messages the devices handed over are not all stored in
time (a recovery that timed out): per device, the missing sequence numbers as ranges and the last
lines of the logs that tell why (``Fleet.log_tails``). Pure functions but ``tail``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

TAIL_LINES = 15


def ranges(numbers: Iterable[int]) -> str:
    """``1, 2, 3, 7, 9, 10`` as ``1-3, 7, 9-10``."""
    out: list[str] = []
    ordered = sorted(set(numbers))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ", ".join(out)


def missing(
    snapshot: Mapping[str, list[int]], stored: Mapping[str, set[int]]
) -> dict[str, list[int]]:
    """Per device of ``snapshot``, its handed-over numbers the hub has not stored (devices with
    none missing are left out)."""
    out: dict[str, list[int]] = {}
    for device, seqs in snapshot.items():
        gone = sorted(set(seqs) - stored.get(device, set()))
        if gone:
            out[device] = gone
    return out


def report(
    timeout: float, gaps: Mapping[str, list[int]], tails: Mapping[str, Mapping[str, list[str]]]
) -> dict[str, Any]:
    """The stall as JSON: per device the count and ranges of missing numbers and the log tails."""
    return {
        "timeoutSeconds": timeout,
        "devices": [
            {
                "device": device,
                "missing": len(seqs),
                "missingSeqs": ranges(seqs),
                "logs": dict(tails.get(device, {})),
            }
            for device, seqs in sorted(gaps.items())
        ],
    }


def render(scenario: str, stall: Mapping[str, Any]) -> str:
    """The stall as text, for a test failure or a terminal."""
    lines = [
        f"{scenario}: not every handed-over message was stored within {stall['timeoutSeconds']:g} s"
    ]
    for dev in stall["devices"]:
        lines.append(f"  {dev['device']}: {dev['missing']} missing: {dev['missingSeqs']}")
        for name, tail in dev["logs"].items():
            lines.append(f"    --- {name} (last {len(tail)} lines)")
            lines.extend(f"    {line}" for line in tail)
    return "\n".join(lines)


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a text file ([] when it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]
