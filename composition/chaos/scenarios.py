"""The chaos scenarios. Each is an ``inject`` phase on a running fleet under load: it injects
its fault, heals it and measures ``recoverySeconds`` (from the end of the fault until every message
the devices had accepted by then was stored); the independent checker then judges what the hub
stored. ``run`` gives a scenario a fleet of its own; ``run_sequence`` runs several phases on one
fleet, judging the whole run after each phase (what the tests do, to start the hub once)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from composition.chaos import faults, twincheck
from composition.chaos.agents import MODULE, AgentFleet, fill
from composition.chaos.checker import Verdict, account_loss
from composition.chaos.edge_scenarios import partition_cap, reboot_offline
from composition.chaos.fleet import Fleet
from composition.chaos.phase import RECOVERY_TIMEOUT, Params, Phase, recover

LIMIT = "8kbit"  # well below what 20 msg/s of a device need (about 40 kbit/s)


@dataclass(frozen=True)
class Scenario:
    name: str
    inject: Callable[[Fleet, Params], Phase]
    rate_factor: float = 1.0  # bursts: the devices send this many times --rate
    agents: bool = False  # devices are edge agents running a load module, not SDK devices
    disk_bytes: int = 0  # the agents' data directory on a tmpfs of this size

    @property
    def summary(self) -> str:
        return " ".join((self.inject.__doc__ or "").split())


def result(name: str, verdict: Verdict, phase: Phase) -> dict[str, Any]:
    """The scenario's JSON: the checker's totals, the verdict and the recovery time."""
    summary = verdict.as_json()
    clean = summary["duplicated"] == 0 and summary["reordered"] == 0
    passed = clean and phase.ok and phase.recovery is not None
    accounted: dict[str, Any] = {}
    if phase.expected_loss is not None:
        accounted = account_loss(verdict, phase.expected_loss)
        passed = passed and accounted["lossAccounted"]
    else:
        passed = passed and (phase.allow_loss or summary["lost"] == 0)
    names = ("devices", "expected", "stored", "lost", "duplicated", "reordered", "unexpected")
    return {
        "scenario": name,
        "passed": passed,
        **{k: summary[k] for k in names},
        "recoverySeconds": round(phase.recovery, 2) if phase.recovery is not None else None,
        **phase.extra,
        **accounted,
        "perDevice": summary["perDevice"],
    }


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
    recovery = recover(fleet, params)
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
    recovery = recover(fleet, params)
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
        recovered = recover(fleet, params, lossy)
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


METHOD_TIMEOUT = 5.0  # responseTimeoutInSeconds of the methods called during lossy
METHOD_GRACE = 10.0  # beyond it, for the REST call itself through the same lossy links


def lossy(fleet: Fleet, params: Params) -> Phase:
    """5 % random packet loss on every link (nftables numgen, both directions, every namespace)
    and 10 ms + 0..--jitter-ms delay (a relay in each device's namespace) for --seconds, while
    the hub patches each device's desired properties and calls a direct method on it (5 s
    timeout) over and over; the backlog drains through the same faults: 0 lost, no duplicates,
    in order; every device sees its desired patches in order, the last one included; every
    method call is answered or fails within its timeout."""
    for device in fleet.devices:
        fleet.start_relay(device, 10, params.jitter_ms)
    for node in fleet.topo.nodes.values():
        faults.apply_nft(node, faults.loss_ruleset(5))
    fleet.probing = True  # only here: see loadgen
    fleet.restart_devices()  # their next connection goes through the relay
    fleet.probing = False  # the next start (the verdict's) goes back to plain devices
    logged = {d: len(fleet.desired_seen(d)) for d in fleet.devices}
    probe = fleet.start_probe(params.seconds, METHOD_TIMEOUT)
    fleet.wait_load(params.seconds)
    recovery = recover(fleet, params)
    out, err = probe.communicate(timeout=METHOD_TIMEOUT + 60)
    if probe.returncode != 0:
        raise RuntimeError(f"the twin and method probe failed: {err.strip()[-500:]}")
    probed = json.loads(out)
    made: dict[str, int] = probed["patches"]
    arrived = fleet.wait_until(
        partial(_patches_arrived, fleet, made, logged), params.recovery_timeout
    )
    for node in fleet.topo.nodes.values():
        faults.clear_nft(node)
    seen = {d: fleet.desired_seen(d)[logged[d] :] for d in fleet.devices}
    figures = twincheck.summarize(made, seen, probed["calls"], METHOD_TIMEOUT + METHOD_GRACE)
    extra = {
        "lossPercent": 5,
        "delayMs": [10, 10 + params.jitter_ms],
        "lastPatchSeconds": None if arrived is None else round(arrived, 2),
        **figures,
    }
    return Phase(recovery, extra=extra, ok=bool(figures["twinMethodsOk"]))


def _patches_arrived(fleet: Fleet, made: dict[str, int], logged: dict[str, int]) -> bool:
    """Every device has seen its last patch (``chaosSeq`` = the number made)."""
    for device, count in made.items():
        seen = fleet.desired_seen(device)[logged[device] :]
        if count and not any(entry.get("chaosSeq") == count for entry in seen):
            return False
    return True


def slow_link(fleet: Fleet, params: Params) -> Phase:
    """Every device's uplink is rate-limited to 8 kbit/s (tc tbf) for --seconds, below what
    the load needs, then freed: the backlog waits in the devices' outboxes and drains; 0 lost,
    no duplicates, in order."""
    fleet.wait_load(1)
    before = {d: len(v) for d, v in fleet.accepted().items()}
    fleet.store.poll()
    for device in fleet.devices:
        faults.rate_limit(fleet.node(device), LIMIT)
    fleet.wait_load(params.seconds)
    stored = len(fleet.store.poll())
    offered = sum(len(v) - before[d] for d, v in fleet.accepted().items())
    for device in fleet.devices:
        faults.clear_rate_limit(fleet.node(device))
    recovery = recover(fleet, params)
    fleet.wait_load(1)
    extra = {"limit": LIMIT, "acceptedWhileLimited": offered, "storedWhileLimited": stored}
    return Phase(recovery, extra=extra)


def disk_full(fleet: Fleet, params: Params) -> Phase:
    """Edge agents (edge hub, load module) cut off from the hub pile messages up in their
    store; then their data directory (a small tmpfs) fills up for --seconds, the agents are
    restarted on the full disk, the link heals while the disk is still full, and then space
    returns. The agents keep running and start on the full disk; the hub sees
    ``storage.state`` ``full`` and then ``ok`` in each ``$edgeAgent`` reported properties; the
    edge hub refuses what it cannot store (507 to the module, which keeps the message and
    retries); nothing stored before is lost."""
    assert isinstance(fleet, AgentFleet)
    fleet.wait_load(1)
    for device in fleet.devices:
        faults.partition(fleet.topo, fleet.node(device))
    fleet.wait_load(2)  # messages queue in the edge hubs' stores
    queued = {d: len(v) for d, v in fleet.accepted().items()}
    filled = {d: fill(fleet.agent_data(d)) for d in fleet.devices}
    fleet.wait_load(params.seconds)
    for device in fleet.devices:
        fleet.restart_agent(device)
    for device in fleet.devices:
        faults.heal(fleet.topo, fleet.node(device))
    shown_full = fleet.wait_until(partial(_storage_is, fleet, "full"), RECOVERY_TIMEOUT)
    alive = all(c is not None and c.proc.poll() is None for c in fleet.devices.values())
    refused = [d for d in fleet.devices if "(507)" in _failures(fleet, d)]
    logged = [d for d in fleet.devices if "disk is full" in _agent_log(fleet, d)]
    accepted_full = {d: len(v) - queued[d] for d, v in fleet.accepted().items()}
    for device in fleet.devices:
        (fleet.agent_data(device) / "filler").unlink()
    shown_ok = fleet.wait_until(partial(_storage_is, fleet, "ok"), RECOVERY_TIMEOUT)
    recovery = recover(fleet, params)
    fleet.wait_load(1)
    extra = {
        "diskBytes": fleet.disk_bytes,
        "filledBytes": sum(filled.values()),
        "queuedBeforeFull": sum(queued.values()),
        "acceptedWhileFull": sum(accepted_full.values()),
        "agentsAlive": alive,
        "sendsRefused": len(refused),
        "conditionLogged": len(logged),
        "reportedFullSeconds": None if shown_full is None else round(shown_full, 2),
        "reportedOkSeconds": None if shown_ok is None else round(shown_ok, 2),
    }
    ok = alive and len(logged) == len(fleet.devices)
    return Phase(recovery, extra=extra, ok=ok and shown_full is not None and shown_ok is not None)


def _storage_is(fleet: AgentFleet, state: str) -> bool:
    """Every agent's storage state at the hub is ``state`` (for ``full``: reported by the agent
    started on the full disk, with its load module running)."""
    try:
        reported = fleet.reported()
    except RuntimeError:  # the hub was busy: not yet
        return False
    for rep in reported.values():
        if (rep.get("storage") or {}).get("state") != state:
            return False
        load = (rep.get("modules") or {}).get(MODULE) or {}
        if state == "full" and load.get("runtimeStatus") != "running":
            return False
    return True


def _failures(fleet: AgentFleet, device: str) -> str:
    try:
        return (fleet.module_dir(device) / "failures").read_text()
    except OSError:
        return ""


def _agent_log(fleet: Fleet, device: str) -> str:
    return "".join(
        p.read_text(errors="replace") for p in fleet.device_dir(device).glob("agent-*.log")
    )


IDLE = ["idle-0", "idle-1", "idle-2"]


def agent_kill(fleet: Fleet, params: Params) -> Phase:
    """kill -9 of each edge agent in the middle of a deployment (three more modules), restart;
    then again in the middle of the deployment that removes them. Converges: every module of
    the deployment runs exactly once, nothing of a removed module remains (the process table
    of the device's namespace, held for 3 s), and the load module loses no message."""
    assert isinstance(fleet, AgentFleet)
    fleet.wait_load(1)
    rounds: list[dict[str, Any]] = []
    for idle in (IDLE, []):
        for device in fleet.devices:
            fleet.deploy(device, idle)
        started = time.monotonic()
        for device in fleet.devices:
            # kill once the agent has begun to act on the deployment (or after 3 s)
            fleet.wait_until(partial(_changing, fleet, device, idle), 3)
            fleet.kill9(fleet.devices[device])
            fleet.start_device(device)
        # until a restarted agent is up, the killed one's modules still run and may look right
        fleet.wait_until(partial(_all_running, fleet), params.recovery_timeout)
        want = {MODULE: 1, **{name: 1 for name in idle}}
        converged = fleet.wait_until(partial(_converged, fleet, want), params.recovery_timeout)
        fleet.wait_load(3)
        steady = all(fleet.module_processes(d) == want for d in fleet.devices)
        rounds.append(
            {
                "modules": sorted(want),
                "convergeSeconds": round(time.monotonic() - started, 2) if converged else None,
                "steady": steady,
                "processes": {d: fleet.module_processes(d) for d in fleet.devices},
            }
        )
    recovery = recover(fleet, params)
    ok = all(r["convergeSeconds"] is not None and r["steady"] for r in rounds)
    return Phase(recovery, extra={"rounds": rounds}, ok=ok)


def _all_running(fleet: AgentFleet) -> bool:
    return all(fleet.agent_running(d) for d in fleet.devices)


def _changing(fleet: AgentFleet, device: str, idle: list[str]) -> bool:
    running = fleet.module_processes(device)
    if idle:
        return any(name in running for name in idle)
    return not all(name in running for name in IDLE)


def _converged(fleet: AgentFleet, want: dict[str, int]) -> bool:
    return all(fleet.module_processes(d) == want for d in fleet.devices)


ROLLOUT_LOSS = 30  # percent, on half of the devices
TERMINAL = ("completed", "aborted", "rolledBack")


def rollout_lossy(fleet: Fleet, params: Params) -> Phase:
    """A staged rollout (fleet deployment v2 over v1: module ``v2`` replaces ``v1``; batches
    50 %, 100 %; abort past 50 % failed, then roll back) while half of the devices lose 30 % of
    their packets (nftables, both directions). It ends by its own rules (completed, or aborted
    and rolled back), and every device then runs exactly one deployment's modules: all v2 when
    completed, all v1 when rolled back, never v1 and v2 together (the process table of each
    device's namespace, held 3 s); the load module loses nothing."""
    assert isinstance(fleet, AgentFleet)
    fleet.wait_load(1)
    fleet.hubctl("tag", *fleet.devices)
    v1, v2 = {MODULE: 1, "v1": 1}, {MODULE: 1, "v2": 1}
    _configure(fleet, "chaos-v1", fleet.content(["v1"]), 10)
    if fleet.wait_until(partial(_converged, fleet, v1), params.recovery_timeout) is None:
        raise RuntimeError(f"v1 did not reach the devices: {_processes(fleet)}")
    lossy = list(fleet.devices)[: max(1, len(fleet.devices) // 2)]
    for device in lossy:
        faults.apply_nft(fleet.node(device), faults.loss_ruleset(ROLLOUT_LOSS))
    health = int(max(30, 3 * params.seconds))
    rollout = {
        "batches": ["50%"],
        "healthTimeoutSecs": health,
        "minHealthySecs": int(max(1, params.seconds // 2)),
        "abort": {"failedPercent": 50, "minDevices": 1},
        "onAbort": "rollback",
    }
    started = time.monotonic()
    _configure(fleet, "chaos-v2", fleet.content(["v2"]), 20, rollout)
    status: dict[str, Any] = {}
    while time.monotonic() - started < health * 3 + 60:
        status = _rollout_status(fleet, "chaos-v2")
        if status.get("state") in TERMINAL:
            break
        time.sleep(1)
    ended = status.get("state") in TERMINAL
    rollout_secs = round(time.monotonic() - started, 2)
    fleet.wait_load(max(1.0, params.seconds))  # the last batch under the same faults
    for device in lossy:
        faults.clear_nft(fleet.node(device))
    want = v2 if status.get("state") == "completed" else v1
    settled = fleet.wait_until(partial(_converged, fleet, want), params.recovery_timeout)
    fleet.wait_load(3)
    final = _processes(fleet)
    mixed = [d for d, running in final.items() if running not in (v1, v2)]
    steady = all(running == want for running in final.values())
    recovery = recover(fleet, params)
    extra = {
        "lossPercent": ROLLOUT_LOSS,
        "lossyDevices": len(lossy),
        "rolloutState": status.get("state"),
        "rolloutReason": status.get("reason"),
        "rolloutSeconds": rollout_secs,
        "settleSeconds": None if settled is None else round(settled, 2),
        "mixedDevices": mixed,
        "processes": final,
    }
    ok = ended and settled is not None and steady and not mixed
    return Phase(recovery, extra=extra, ok=ok)


def _configure(
    fleet: AgentFleet,
    config_id: str,
    content: dict[str, Any],
    priority: int,
    rollout: dict[str, Any] | None = None,
) -> None:
    body: dict[str, Any] = {
        "id": config_id,
        "content": content,
        "targetCondition": "tags.chaos='1'",
        "priority": priority,
    }
    if rollout is not None:
        body["rollout"] = rollout
    path = fleet.dir / f"{config_id}.json"
    path.write_text(json.dumps(body))
    fleet.hubctl("configure", str(path))


def _rollout_status(fleet: AgentFleet, config_id: str) -> dict[str, Any]:
    try:
        config = json.loads(fleet.hubctl("configuration", config_id))
    except (RuntimeError, ValueError):  # the hub was busy: ask again
        return {}
    return dict(config.get("rolloutStatus") or {})


def _processes(fleet: AgentFleet) -> dict[str, dict[str, int]]:
    return {d: fleet.module_processes(d) for d in fleet.devices}


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("partition", partition),
        Scenario("partition-one-way", partition_one_way),
        Scenario("hub-kill", hub_kill, rate_factor=5),
        Scenario("broker-restart", broker_restart, rate_factor=5),
        Scenario("broker-kill", broker_kill, rate_factor=5),
        Scenario("lossy", lossy),
        Scenario("slow-link", slow_link),
        Scenario("disk-full", disk_full, agents=True, disk_bytes=32 << 20),
        Scenario("agent-kill", agent_kill, agents=True),
        Scenario("rollout-lossy", rollout_lossy, agents=True),
        Scenario("reboot-offline", reboot_offline, agents=True),
        Scenario("partition-cap", partition_cap, agents=True),
    )
}


def make_fleet(scenario: Scenario, params: Params) -> Fleet:
    rate = params.rate * scenario.rate_factor
    if scenario.agents:
        return AgentFleet(params.devices, rate, disk_bytes=scenario.disk_bytes)
    return Fleet(params.devices, rate)


def run(name: str, params: Params) -> dict[str, Any]:
    """One scenario on a fleet of its own."""
    scenario = SCENARIOS[name]
    with make_fleet(scenario, params) as fleet:
        fleet.start_load()
        started = time.monotonic()
        phase = _stalls_noted(fleet, scenario.inject(fleet, params))
        outcome = result(name, fleet.finish(), phase)
        return {**outcome, "phaseSeconds": round(time.monotonic() - started, 1)}


def run_sequence(fleet: Fleet, names: list[str], params: Params) -> list[dict[str, Any]]:
    """Several scenarios one after the other on one running fleet; each result judges the whole
    run up to the end of that phase."""
    out = []
    for name in names:
        started = time.monotonic()
        phase = _stalls_noted(fleet, SCENARIOS[name].inject(fleet, params))
        outcome = result(name, fleet.checkpoint(), phase)
        out.append({**outcome, "phaseSeconds": round(time.monotonic() - started, 1)})
    return out


def _stalls_noted(fleet: Fleet, phase: Phase) -> Phase:
    """``phase`` with the recoveries that timed out during it (``recoveryTimeouts``)."""
    if fleet.stalls:
        phase.extra["recoveryTimeouts"], fleet.stalls = fleet.stalls, []
    return phase
