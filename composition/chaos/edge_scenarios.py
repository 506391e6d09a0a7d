"""Scenarios of edge devices cut off from the hub: a cold start while unreachable
(``reboot-offline``) and a store-and-forward cap smaller than the backlog (``partition-cap``)."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from composition.chaos import faults
from composition.chaos.agents import MODULE, AgentFleet
from composition.chaos.fleet import Fleet, newest
from composition.chaos.phase import Params, Phase, recover

FROM_SAVED = "started from the persisted deployment"


def _stored_from(fleet: Fleet) -> int:
    """Messages the hub stored since the previous poll."""
    return len(fleet.store.poll())


def _stored_after_cut(fleet: Fleet, before_cut: dict[str, set[int]]) -> int:
    """Messages the hub stored since the previous poll that were accepted after the cut (what
    was accepted before it may still be stored meanwhile: it was on its way)."""
    return sum(1 for key, seq in fleet.store.poll() if seq not in before_cut.get(key, set()))


def reboot_offline(fleet: Fleet, params: Params) -> Phase:
    """A device reboot with the hub unreachable: every process of each edge device is killed
    (agent and modules, as by a power cut), its link goes down, and the agent starts cold in
    the partitioned namespace for --seconds, then the link returns. The agent runs the modules
    of its last deployment from what it saved, each once; messages queue in the edge hub's
    store (nothing reaches the hub while cut) and are all delivered once the link returns:
    0 lost, no duplicates, in order."""
    assert isinstance(fleet, AgentFleet)
    fleet.wait_load(1)
    running = {d: fleet.module_processes(d) for d in fleet.devices}
    for device in fleet.devices:
        fleet.power_off(device)
        faults.partition(fleet.topo, fleet.node(device))
    before_cut = {d: set(v) for d, v in fleet.accepted().items()}  # the processes are dead
    before = {d: len(v) for d, v in before_cut.items()}
    started = time.monotonic()
    for device in fleet.devices:
        fleet.start_device(device)
    back = fleet.wait_until(partial(_back, fleet, running), params.recovery_timeout)
    fleet.wait_load(params.seconds)
    during = _stored_after_cut(fleet, before_cut)
    offline = sum(len(v) - before[d] for d, v in fleet.accepted().items())
    from_saved = [d for d in fleet.devices if FROM_SAVED in _newest_agent_log(fleet, d)]
    processes = {d: fleet.module_processes(d) for d in fleet.devices}
    for device in fleet.devices:
        faults.heal(fleet.topo, fleet.node(device))
    recovery = recover(fleet, params)
    fleet.wait_load(1)
    extra = {
        "offlineSeconds": round(time.monotonic() - started, 2),
        "modulesBackSeconds": None if back is None else round(back, 2),
        "startedFromSaved": len(from_saved),
        "acceptedWhileOffline": offline,
        "storedWhileOffline": during,
        "processes": processes,
    }
    ok = back is not None and len(from_saved) == len(fleet.devices) and during == 0
    return Phase(recovery, extra=extra, ok=ok and offline > 0)


def _back(fleet: AgentFleet, running: dict[str, dict[str, int]]) -> bool:
    """Every restarted agent is up and runs what ran before the cut, each module once."""
    return all(
        fleet.agent_running(d) and fleet.module_processes(d) == running[d] for d in fleet.devices
    )


def _newest_agent_log(fleet: Fleet, device: str) -> str:
    logs = newest(fleet.device_dir(device).glob("agent-*.log"))
    return logs[0].read_text(errors="replace") if logs else ""


CAP_BYTES = 2048  # about a dozen load messages (body, property bag) in the edge hub's store
CAP_WINDOW = 8  # messages in the upstream outbox ahead of their acknowledgements


def partition_cap(fleet: Fleet, params: Params) -> Phase:
    """The edge agents restart with a store-and-forward cap far below the backlog (2 KiB;
    forward window 8 messages), then their links go down for --seconds under load and come
    back. The edge hub evicts the oldest stored messages past the cap and counts them; the
    count reaches the hub (``$edgeAgent`` reported ``systemModules.edgeHub.storeAndForward
    .evictedMessages``) and equals the device's own counter; the checker finds exactly that
    many lost, nothing else, no duplicates, in order. The cap stays until the agents' next
    start with another configuration."""
    assert isinstance(fleet, AgentFleet)
    fleet.wait_load(1)
    before = fleet.accepted()
    for device in fleet.devices:
        fleet.set_config(
            device, edge_hub_store_max_bytes=CAP_BYTES, edge_hub_forward_window=CAP_WINDOW
        )
        fleet.restart_agent(device)
    moving = int(fleet.rate) + 1  # a second of load after the restart
    resumed = partial(_sent_since, fleet, before, moving)
    if fleet.wait_until(resumed, params.recovery_timeout) is None:
        raise RuntimeError(f"the load modules did not resume after the restart; see {fleet.dir}")
    recover(fleet, params)
    for device in fleet.devices:
        faults.partition(fleet.topo, fleet.node(device))
    fleet.wait_load(0.5)  # what was on the wire before the cut may still arrive
    _stored_from(fleet)
    fleet.wait_load(params.seconds)
    during = _stored_from(fleet)
    for device in fleet.devices:
        faults.heal(fleet.topo, fleet.node(device))
    recovery = recover(fleet, params, lossy=True)
    on_device = {d: fleet.evicted_on_device(d) for d in fleet.devices}
    reported_in = fleet.wait_until(partial(_reported_is, fleet, on_device), params.recovery_timeout)
    reported = _reported_evicted(fleet)
    fleet.wait_load(1)
    extra: dict[str, Any] = {
        "capBytes": CAP_BYTES,
        "forwardWindow": CAP_WINDOW,
        "storedWhileCut": during,
        "evictedOnDevice": sum(on_device.values()),
        "evictedReported": sum(v or 0 for v in reported.values()),
        "reportedSeconds": None if reported_in is None else round(reported_in, 2),
    }
    ok = reported_in is not None and all(on_device.values())
    expected = {f"{d}/{MODULE}": n for d, n in on_device.items()}
    return Phase(recovery, extra=extra, ok=ok, expected_loss=expected)


def _sent_since(fleet: AgentFleet, before: dict[str, list[int]], count: int) -> bool:
    now = fleet.accepted()
    return all(len(now[d]) >= len(before[d]) + count for d in before)


def _reported_evicted(fleet: AgentFleet) -> dict[str, int | None]:
    """Per device, ``evictedMessages`` as the hub has it (None: not reported)."""
    try:
        reported = fleet.reported()
    except RuntimeError:  # the hub was busy: not yet
        return dict.fromkeys(fleet.devices)
    out: dict[str, int | None] = {}
    for device, rep in reported.items():
        saf = ((rep.get("systemModules") or {}).get("edgeHub") or {}).get("storeAndForward")
        value = (saf or {}).get("evictedMessages")
        out[device] = value if isinstance(value, int) else None
    return out


def _reported_is(fleet: AgentFleet, on_device: dict[str, int]) -> bool:
    return _reported_evicted(fleet) == on_device
