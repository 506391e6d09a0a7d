"""The independent checker: from what each device says it handed over (its accepted sequence
numbers) and what the hub stored (``(device, seq)`` in the hub's storage order), per device:
expected, stored, lost, duplicated, reordered, and stored messages the device never reported as
accepted (``unexpected``: a device killed between its outbox commit and its own log line).

``reordered`` counts stored messages whose sequence number is below the highest one already
stored for that device (a message overtaken by a later one). Pure functions, no I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class DeviceVerdict:
    device: str
    expected: int
    stored: int
    lost: int
    duplicated: int
    reordered: int
    unexpected: int
    first_lost: list[int]
    lost_runs: int = 0  # runs of consecutive lost numbers (one: a single gap, as eviction makes)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.reordered == 0


@dataclass(frozen=True)
class Verdict:
    devices: list[DeviceVerdict]

    def total(self, name: str) -> int:
        return sum(int(getattr(d, name)) for d in self.devices)

    def as_json(self) -> dict[str, Any]:
        names = ("expected", "stored", "lost", "duplicated", "reordered", "unexpected")
        return {
            "devices": len(self.devices),
            **{n: self.total(n) for n in names},
            "perDevice": [asdict(d) for d in self.devices],
        }


def check_device(device: str, accepted: Iterable[int], stored: Iterable[int]) -> DeviceVerdict:
    want = set(accepted)
    counts: Counter[int] = Counter()
    reordered = 0
    highest = -1
    for seq in stored:
        counts[seq] += 1
        if counts[seq] > 1:
            continue  # a duplicate is counted once, as a duplicate, not also as reordered
        if seq < highest:
            reordered += 1
        highest = max(highest, seq)
    present = want & set(counts)
    missing = sorted(want - present)
    return DeviceVerdict(
        device=device,
        expected=len(want),
        stored=len(present),
        lost=len(missing),
        duplicated=sum(c - 1 for c in counts.values()),
        reordered=reordered,
        unexpected=len(set(counts) - want),
        first_lost=missing[:10],
        lost_runs=sum(1 for i, seq in enumerate(missing) if i == 0 or missing[i - 1] != seq - 1),
    )


def check(accepted: Mapping[str, Iterable[int]], stored: Iterable[tuple[str, int]]) -> Verdict:
    """``accepted``: per device, the sequence numbers it handed over; ``stored``: the hub's rows
    in storage order. Devices that stored something but reported nothing are included."""
    per_device: dict[str, list[int]] = {d: [] for d in accepted}
    for device, seq in stored:
        per_device.setdefault(device, []).append(seq)
    return Verdict(
        [check_device(d, accepted.get(d, ()), per_device[d]) for d in sorted(per_device)]
    )


def account_loss(verdict: Verdict, expected: Mapping[str, int]) -> dict[str, Any]:
    """Loss the system under test counted itself (evicted messages), per device: lost must be
    exactly that many. ``unaccounted`` per device is lost minus expected (negative: fewer lost
    than counted)."""
    lost = {d.device: d.lost for d in verdict.devices}
    runs = {d.device: d.lost_runs for d in verdict.devices}
    rows: list[dict[str, Any]] = [
        {
            "device": device,
            "expectedLoss": expected.get(device, 0),
            "lost": lost.get(device, 0),
            "unaccounted": lost.get(device, 0) - expected.get(device, 0),
            "lostRuns": runs.get(device, 0),
        }
        for device in sorted(set(lost) | set(expected))
    ]
    return {
        "expectedLoss": sum(r["expectedLoss"] for r in rows),
        "unaccountedLoss": sum(abs(r["unaccounted"]) for r in rows),
        "lossAccounted": all(r["unaccounted"] == 0 for r in rows),
        "lossPerDevice": rows,
    }
