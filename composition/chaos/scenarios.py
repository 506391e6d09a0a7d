"""The chaos scenarios. Each is an ``inject`` phase on a running fleet under load: it injects
its fault, heals it and measures ``recoverySeconds`` (from the end of the fault until every message
the devices had accepted by then was stored); the independent checker then judges what the hub
stored. ``run`` gives a scenario a fleet of its own; ``run_sequence`` runs several phases on one
fleet, judging the whole run after each phase (what the tests do, to start the hub once)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from composition.chaos import faults
from composition.chaos.checker import Verdict
from composition.chaos.fleet import Fleet

RECOVERY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Params:
    seconds: float = 10.0
    devices: int = 3
    rate: float = 20.0


@dataclass
class Phase:
    """What an injected fault measured."""

    recovery: float | None
    allow_loss: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    inject: Callable[[Fleet, Params], Phase]
    rate_factor: float = 1.0  # bursts: the devices send this many times --rate

    @property
    def summary(self) -> str:
        return " ".join((self.inject.__doc__ or "").split())


def result(name: str, verdict: Verdict, phase: Phase) -> dict[str, Any]:
    """The scenario's JSON: the checker's totals, the verdict and the recovery time."""
    summary = verdict.as_json()
    clean = summary["duplicated"] == 0 and summary["reordered"] == 0
    passed = clean and phase.recovery is not None and (phase.allow_loss or summary["lost"] == 0)
    names = ("devices", "expected", "stored", "lost", "duplicated", "reordered", "unexpected")
    return {
        "scenario": name,
        "passed": passed,
        **{k: summary[k] for k in names},
        "recoverySeconds": round(phase.recovery, 2) if phase.recovery is not None else None,
        **phase.extra,
        "perDevice": summary["perDevice"],
    }


def _recover(fleet: Fleet, lossy: bool = False) -> float | None:
    """Seconds until what the devices have accepted so far is stored (``lossy``: until their
    newest message is, for faults that may lose older ones)."""
    snapshot = fleet.accepted()
    done = fleet.flowing if lossy else fleet.caught_up
    return fleet.wait_until(lambda: done(snapshot), RECOVERY_TIMEOUT)


def _stored_of(rows: list[tuple[str, int]], device: str) -> int:
    return sum(1 for d, _ in rows if d == device)


def _cut(fleet: Fleet, params: Params, apply: Callable[[], None]) -> Phase:
    node = fleet.node("chaos-0")
    fleet.wait_load(1)
    apply()
    fleet.wait_load(0.5)  # what was on the wire before the cut may still arrive
    fleet.store.poll()
    fleet.wait_load(params.seconds)
    during = _stored_of(fleet.store.poll(), "chaos-0")
    faults.heal(fleet.topo, node)
    recovery = _recover(fleet)
    fleet.wait_load(1)
    return Phase(recovery, extra={"faultSeconds": params.seconds, "storedWhileCut": during})


def partition(fleet: Fleet, params: Params) -> Phase:
    """Device chaos-0 is cut off the network (both directions: its bridge port goes down) for
    --seconds under load, then back. Proves store-and-forward: 0 lost, no duplicates, in order."""
    node = fleet.node("chaos-0")
    return _cut(fleet, params, lambda: faults.partition(fleet.topo, node))


def partition_one_way(fleet: Fleet, params: Params) -> Phase:
    """Device chaos-0's packets to the hub are dropped (nftables; the hub's still arrive) for
    --seconds, then back: 0 lost, no duplicates, in order."""
    node = fleet.node("chaos-0")
    hub = fleet.topo.nodes["hub"].addr
    return _cut(fleet, params, lambda: faults.apply_nft(node, faults.one_way_ruleset(hub, "out")))


def hub_kill(fleet: Fleet, params: Params) -> Phase:
    """kill -9 of the hub during a burst from every device (5x --rate); restarted after
    max(1, seconds/2) s. mosquitto keeps the hub's persistent session: 0 lost, 0 duplicated after
    the hub's dedup, per-device order kept."""
    fleet.wait_load(1)
    fleet.kill9(fleet.hub)
    down = max(1.0, params.seconds / 2)
    fleet.wait_load(down)
    fleet.start_hub()
    recovery = _recover(fleet)
    fleet.wait_load(1)
    return Phase(recovery, extra={"hubDownSeconds": down})


def _broker(fleet: Fleet, params: Params, sig: signal.Signals) -> Phase:
    fleet.wait_load(1)
    lossy = sig == signal.SIGKILL
    restarts = 0
    recoveries: list[float | None] = []
    deadline = time.monotonic() + params.seconds
    while time.monotonic() < deadline or restarts == 0:
        old = fleet.signal_broker(sig)
        restarts += 1
        start = time.monotonic()
        if fleet.wait_until(partial(_restarted, fleet, old), 30) is None:
            raise RuntimeError("the hub did not restart mosquitto")
        recovered = _recover(fleet, lossy)
        recoveries.append(None if recovered is None else time.monotonic() - start)
        fleet.wait_load(1)
    done = [r for r in recoveries if r is not None]
    worst = max(done) if len(done) == len(recoveries) else None
    return Phase(worst, allow_loss=lossy, extra={"brokerRestarts": restarts})


def _restarted(fleet: Fleet, old_pid: int) -> bool:
    try:
        return fleet.broker_pid() != old_pid
    except (OSError, ValueError):
        return False


def broker_restart(fleet: Fleet, params: Params) -> Phase:
    """mosquitto stopped with SIGTERM under load (5x --rate), again every ~2 s for --seconds; the
    hub restarts it. A graceful stop saves its persistence file: 0 lost."""
    return _broker(fleet, params, signal.SIGTERM)


def broker_kill(fleet: Fleet, params: Params) -> Phase:
    """mosquitto killed with SIGKILL under load (5x --rate), again every ~2 s for --seconds. What
    it acknowledged but had neither delivered to the hub nor saved (autosave every 1 s) is lost:
    measured, not excluded; passes when delivery resumes with no duplicates or reordering."""
    return _broker(fleet, params, signal.SIGKILL)


def lossy(fleet: Fleet, params: Params) -> Phase:
    """5 % random packet loss on every link (nftables numgen, both directions, every namespace)
    and 10-50 ms delay and jitter (a relay in each device's namespace) for --seconds; the backlog
    drains through the same faults: 0 lost, no duplicates, in order."""
    for device in fleet.devices:
        fleet.start_relay(device, 10, 40)
    for node in fleet.topo.nodes.values():
        faults.apply_nft(node, faults.loss_ruleset(5))
    fleet.restart_devices()  # their next connection goes through the relay
    fleet.wait_load(params.seconds)
    recovery = _recover(fleet)
    for node in fleet.topo.nodes.values():
        faults.clear_nft(node)
    return Phase(recovery, extra={"lossPercent": 5, "delayMs": [10, 50]})


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("partition", partition),
        Scenario("partition-one-way", partition_one_way),
        Scenario("hub-kill", hub_kill, rate_factor=5),
        Scenario("broker-restart", broker_restart, rate_factor=5),
        Scenario("broker-kill", broker_kill, rate_factor=5),
        Scenario("lossy", lossy),
    )
}


def run(name: str, params: Params) -> dict[str, Any]:
    """One scenario on a fleet of its own."""
    scenario = SCENARIOS[name]
    with Fleet(params.devices, params.rate * scenario.rate_factor) as fleet:
        fleet.start_load()
        phase = scenario.inject(fleet, params)
        return result(name, fleet.finish(), phase)


def run_sequence(fleet: Fleet, names: list[str], params: Params) -> list[dict[str, Any]]:
    """Several scenarios one after the other on one running fleet; each result judges the whole
    run up to the end of that phase."""
    out = []
    for name in names:
        phase = SCENARIOS[name].inject(fleet, params)
        out.append(result(name, fleet.checkpoint(), phase))
    return out
