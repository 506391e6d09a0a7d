"""Twin and direct-method checks of a chaos run, from what the devices logged and what the
method calls returned. Pure functions, no I/O.

Desired patches: the harness sets ``desired.chaosSeq`` to 1, 2, ... K on each device; the device
logs every desired change its handler sees (a pushed patch, or the whole desired section after a
reconnect) as ``{"version": $version, "chaosSeq": k}``. A twin is state, not a queue: a patch
superseded while the device was away may never be seen on its own, but what is seen must move
forward (versions strictly increasing, the counter never going back) and the last one must
arrive.

Methods: each call is ``{"device", "status", "seconds"}`` (status 0: no HTTP answer); a call
answered with 200 is answered, any other outcome failed, and one that took longer than its
timeout plus a grace is overdue (a hang, whatever it ended with)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def check_patches(made: int, seen: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One device: ``made`` patches (counter 1..made), ``seen`` its log in arrival order."""
    delivered: set[int] = set()
    out_of_order = 0
    last_version = last_seq = -1
    for entry in seen:
        version = int(entry.get("version") or 0)
        seq = entry.get("chaosSeq")
        counter = int(seq) if isinstance(seq, int) else -1
        if version <= last_version or (counter >= 0 and counter < last_seq):
            out_of_order += 1
        last_version = max(last_version, version)
        if 1 <= counter <= made:
            delivered.add(counter)
        last_seq = max(last_seq, counter)
    return {
        "patches": made,
        "delivered": len(delivered),
        "outOfOrder": out_of_order,
        "lastArrived": made == 0 or made in delivered,
    }


def check_methods(calls: Iterable[Mapping[str, Any]], deadline: float) -> dict[str, int]:
    """Calls of one device (or all): answered (200), failed, overdue (longer than ``deadline``
    seconds)."""
    listed = list(calls)
    answered = sum(1 for c in listed if c["status"] == 200)
    return {
        "calls": len(listed),
        "answered": answered,
        "failed": len(listed) - answered,
        "overdue": sum(1 for c in listed if c["seconds"] > deadline),
    }


def summarize(
    patches: Mapping[str, int],
    seen: Mapping[str, list[dict[str, Any]]],
    calls: list[dict[str, Any]],
    deadline: float,
) -> dict[str, Any]:
    """Totals and per-device figures for ``twin`` and ``methods``; ``ok`` when every device saw
    its patches in order, the last one included, and no call overran ``deadline``."""
    per_device: list[dict[str, Any]] = []
    for device in sorted(patches):
        twin = check_patches(patches[device], seen.get(device, []))
        methods = check_methods((c for c in calls if c["device"] == device), deadline)
        per_device.append({"device": device, "twin": twin, "methods": methods})
    twin_total = {
        name: sum(int(d["twin"][name]) for d in per_device)
        for name in ("patches", "delivered", "outOfOrder")
    }
    methods_total = check_methods(calls, deadline)
    ok = all(d["twin"]["lastArrived"] and d["twin"]["outOfOrder"] == 0 for d in per_device)
    return {
        "twin": twin_total,
        "methods": methods_total,
        "twinMethodsPerDevice": per_device,
        "twinMethodsOk": ok and methods_total["overdue"] == 0,
    }
