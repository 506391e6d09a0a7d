"""What every scenario shares: its parameters, what an injected fault measured (``Phase``) and
the wait for the system to store what the devices handed over (``recover``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from composition.chaos import stall
from composition.chaos.fleet import Fleet

RECOVERY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Params:
    seconds: float = 10.0
    devices: int = 3
    rate: float = 20.0
    # how long a scenario waits for the system to settle after a fault (messages stored, modules
    # converged); a recovery that times out is reported with what is missing and fails
    recovery_timeout: float = RECOVERY_TIMEOUT
    jitter_ms: float = 40.0  # lossy: each relayed chunk held 10 ms + uniform(0, jitter_ms)


@dataclass
class Phase:
    """What an injected fault measured."""

    recovery: float | None
    allow_loss: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    ok: bool = True  # the scenario's own checks beyond the message verdict
    # loss the system counted itself (messages evicted by a store's cap), per checker device:
    # the checker must find exactly that many lost, and no other
    expected_loss: dict[str, int] | None = None


def recover(fleet: Fleet, params: Params, lossy: bool = False) -> float | None:
    """Seconds until what the devices have accepted so far is stored (``lossy``: until their
    newest message is, for faults that may lose older ones). None after
    ``params.recovery_timeout``: the missing numbers and log tails of each device that lacks
    some are then kept in ``fleet.stalls`` (and printed to stderr at once)."""
    snapshot = fleet.accepted()
    done = fleet.flowing if lossy else fleet.caught_up
    took = fleet.wait_until(lambda: done(snapshot), params.recovery_timeout)
    if took is None:
        gaps = stall.missing(snapshot, fleet.stored_sets())
        tails = {device: fleet.log_tails(device) for device in gaps}
        found = stall.report(params.recovery_timeout, gaps, tails)
        fleet.stalls.append(found)
        print(stall.render("recovery", found), file=sys.stderr, flush=True)
    return took
