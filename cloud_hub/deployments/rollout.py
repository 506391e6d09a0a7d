"""Staged rollout of a fleet deployment, decided without acting: pure functions from the
rollout spec, the devices the deployment targets, what the hub sees of the active ones and
``now`` (seconds on the hub's clock) to a new ``RolloutState``. The hub's adapter stores the
state, builds the observations from the ``$edgeAgent`` twins and re-assigns the devices that
``rollout_device_sets`` names.

Spec (``parse_rollout``)::

    {"batches": ["1", "10%", "50%", "100%"], "healthTimeoutSecs": 600, "minHealthySecs": 60,
     "abort": {"failedPercent": 10, "minDevices": 3}, "onAbort": "rollback"}

Each batch is a cumulative device count, ``"N"`` or ``"P%"`` of the devices targeted at start
(rounded up, at least 1). A list whose last entry is not ``"100%"`` gets an implicit ``"100%"``
appended, so every rollout ends with the whole target. Counts and percentages cannot be compared
before the target is known, so a batch smaller than the one before it counts as the one before
it (it activates nothing new). ``minHealthySecs`` must be less than ``healthTimeoutSecs``, or
no device could ever be healthy in time.

Devices are ordered by the sha256 of their id (hex, ascending) at start; the batch sizes are
fixed then too. A device is *active* once given the deployment. Per active device::

    pending --(code 200, every module running, no restart, for minHealthySecs)--> healthy
    pending --(code != 200 | a module backoff/failed/unhealthy | healthTimeoutSecs over)--> failed

``healthy_since`` is when the hub first saw code 200 with every module running; a restart (a
changed restartCount) or a module leaving ``running`` starts it again. Module statuses count
only once the agent has reported on this deployment's version: before that they may describe
the one it replaces. Healthy and failed are final, so the decisions below stay stable.

The rollout::

    inProgress --pause--> paused --resume--> inProgress
    inProgress --(every active device decided, more batches)--> inProgress, next batch active
    inProgress --(every active device decided, last batch)--> completed
    inProgress --(failed share > failedPercent and (active >= minDevices or batch decided))
               --> rolledBack (onAbort "rollback") | aborted (onAbort "halt")
    inProgress | paused --abort()--> rolledBack | aborted
    completed, aborted, rolledBack: terminal

While paused, outcomes are still judged but nothing is activated and nothing aborts; the first
advance after ``resume`` does both. Devices targeted after start are appended to the order (by
the same hash) and join the current batch at once, also when nothing was targeted at start.
Devices that leave the target drop out of the active set and every count; one that comes back
is activated again when its place in the order is due. With nothing targeted the rollout waits
in its batch. On rollback the adapter takes the deployment away from every active device
(``RolloutState.assigned`` is empty); on halt the active devices keep it.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Literal

OnAbort = Literal["rollback", "halt"]
Outcome = Literal["pending", "healthy", "failed"]
State = Literal["inProgress", "paused", "completed", "aborted", "rolledBack"]

_STATES: tuple[State, ...] = ("inProgress", "paused", "completed", "aborted", "rolledBack")
_OUTCOMES: tuple[Outcome, ...] = ("pending", "healthy", "failed")
_TERMINAL = frozenset({"completed", "aborted", "rolledBack"})
_FAILING_MODULE = frozenset({"backoff", "failed", "unhealthy"})
_BATCH = re.compile(r"(?P<count>[0-9]+)|(?P<percent>[0-9]+(?:\.[0-9]+)?)%")
_REASON_DEVICES = 3  # failed devices named in an abort reason


class RolloutSpecError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


# ---------------------------------------------------------------------- spec
@dataclass(frozen=True)
class RolloutSpec:
    batches: tuple[str, ...] = ("100%",)
    health_timeout_secs: float = 600.0
    min_healthy_secs: float = 60.0
    failed_percent: float = 10.0
    min_devices: int = 3
    on_abort: OnAbort = "rollback"

    def to_json(self) -> dict[str, Any]:
        return {
            "batches": list(self.batches),
            "healthTimeoutSecs": _plain(self.health_timeout_secs),
            "minHealthySecs": _plain(self.min_healthy_secs),
            "abort": {"failedPercent": _plain(self.failed_percent), "minDevices": self.min_devices},
            "onAbort": self.on_abort,
        }


def parse_rollout(obj: Any, path: str = "rollout") -> RolloutSpec:
    """Validate a ``rollout`` object (see the module docstring); errors name the JSON path."""
    _check_keys(obj, path, {"batches", "healthTimeoutSecs", "minHealthySecs", "abort", "onAbort"})
    if "batches" not in obj:
        raise RolloutSpecError(f"{path}.batches", "is required")
    batches = _parse_batches(obj["batches"], f"{path}.batches")
    timeout = _number(obj, "healthTimeoutSecs", path, 600.0, low=0.0, low_open=True)
    healthy = _number(obj, "minHealthySecs", path, 60.0, low=0.0)
    if healthy >= timeout:
        raise RolloutSpecError(
            f"{path}.minHealthySecs", f"must be less than healthTimeoutSecs ({_plain(timeout)})"
        )
    abort_obj = obj.get("abort", {})
    abort_path = f"{path}.abort"
    _check_keys(abort_obj, abort_path, {"failedPercent", "minDevices"})
    failed_percent = _number(abort_obj, "failedPercent", abort_path, 10.0, low=0.0, high=100.0)
    min_devices = abort_obj.get("minDevices", 3)
    if isinstance(min_devices, bool) or not isinstance(min_devices, int) or min_devices < 1:
        raise RolloutSpecError(f"{abort_path}.minDevices", "must be an integer >= 1")
    on_abort = obj.get("onAbort", "rollback")
    if on_abort not in ("rollback", "halt"):
        raise RolloutSpecError(f"{path}.onAbort", 'must be "rollback" or "halt"')
    return RolloutSpec(batches, timeout, healthy, failed_percent, min_devices, on_abort)


def _check_keys(obj: Any, path: str, allowed: set[str]) -> None:
    if not isinstance(obj, dict):
        raise RolloutSpecError(path, "must be a JSON object")
    for key in obj:
        if key not in allowed:
            raise RolloutSpecError(
                f"{path}.{key}", f"unknown key; expected {', '.join(sorted(allowed))}"
            )


def _parse_batches(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise RolloutSpecError(path, 'must be a non-empty list such as ["1", "10%", "100%"]')
    last: dict[bool, Fraction] = {}  # the last count and the last percentage seen
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        parsed = _batch_value(item) if isinstance(item, str) else None
        if parsed is None:
            raise RolloutSpecError(item_path, 'must be a count "N" (>= 1) or "P%" (0 < P <= 100)')
        is_percent, amount = parsed
        if amount < last.get(is_percent, amount):
            raise RolloutSpecError(
                item_path, f"{item} is smaller than an earlier batch; batches are cumulative"
            )
        last[is_percent] = amount
    batches = tuple(value)
    return batches if _batch_value(batches[-1]) == (True, 100) else (*batches, "100%")


def _batch_value(text: str) -> tuple[bool, Fraction] | None:
    """``(is_percent, amount)`` of a valid batch entry, else None."""
    match = _BATCH.fullmatch(text)
    if match is None:
        return None
    if match["count"] is not None:
        count = int(match["count"])
        return (False, Fraction(count)) if count >= 1 else None
    percent = Fraction(match["percent"])
    return (True, percent) if 0 < percent <= 100 else None


def _number(
    obj: Mapping[str, Any],
    key: str,
    path: str,
    default: float,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
) -> float:
    value = obj.get(key, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value < low or (low_open and value == low) or value > high):
        ok = False
    if not ok:
        bounds = f"{'>' if low_open else '>='} {_plain(low)}"
        if high != math.inf:
            bounds += f" and <= {_plain(high)}"
        raise RolloutSpecError(f"{path}.{key}", f"must be a number {bounds}")
    return float(value)


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def batch_sizes(spec: RolloutSpec, targeted_count: int) -> tuple[int, ...]:
    """Cumulative device counts, one per batch: a percentage rounds up, is at least 1 when
    there are devices and no batch is smaller than the one before it."""
    sizes: list[int] = []
    for entry in spec.batches:
        parsed = _batch_value(entry)
        if parsed is None:
            raise RolloutSpecError("rollout.batches", f"invalid batch {entry!r}")
        is_percent, amount = parsed
        size = math.ceil(amount * targeted_count / 100) if is_percent else int(amount)
        if targeted_count > 0:
            size = max(size, 1)
        sizes.append(max(min(size, targeted_count), sizes[-1] if sizes else 0))
    return tuple(sizes)


# ---------------------------------------------------------------------- state
@dataclass(frozen=True)
class Observation:
    """What the hub sees of one active device: ``status_code`` is the ``$edgeAgent``
    ``lastDesiredStatus.code`` for the desired version carrying this deployment (None until
    reported); ``modules`` maps the deployment's modules to (runtimeStatus, restartCount).
    With ``expected_modules`` given, a module missing from ``modules`` is not reported yet;
    without it only the modules present are judged."""

    status_code: int | None
    modules: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    expected_modules: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DeviceProgress:
    batch: int
    activated_at: float
    outcome: Outcome = "pending"
    healthy_since: float | None = None
    restarts: Mapping[str, int] = field(default_factory=dict)
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "activatedAt": self.activated_at,
            "outcome": self.outcome,
            "healthySince": self.healthy_since,
            "restarts": dict(self.restarts),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RolloutState:
    state: State
    order: tuple[str, ...]
    sizes: tuple[int, ...]
    batch: int
    devices: Mapping[str, DeviceProgress]
    reason: str = ""

    def active(self) -> frozenset[str]:
        """The devices given the deployment so far (kept as a record after a rollback)."""
        return frozenset(self.devices)

    def assigned(self) -> frozenset[str]:
        """The devices the deployment applies to now: none after a rollback."""
        return frozenset() if self.state == "rolledBack" else self.active()

    def count(self, outcome: Outcome) -> int:
        return sum(1 for progress in self.devices.values() if progress.outcome == outcome)

    def summary(self) -> dict[str, Any]:
        """For people: ``batch`` counts from 1 (``batch`` of ``batches``); ``updated`` is the
        number of active devices."""
        return {
            "state": self.state,
            "batch": self.batch + 1,
            "batches": len(self.sizes),
            "updated": len(self.devices),
            "healthy": self.count("healthy"),
            "failed": self.count("failed"),
            "pending": self.count("pending"),
            "reason": self.reason,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "order": list(self.order),
            "sizes": list(self.sizes),
            "batch": self.batch,
            "devices": {device: p.to_json() for device, p in self.devices.items()},
            "reason": self.reason,
        }

    @staticmethod
    def from_json(doc: Any) -> RolloutState:
        """The inverse of ``to_json``; ValueError when ``doc`` is not such a document."""
        try:
            state = _one_of(doc["state"], _STATES)
            devices = {
                _text(device): _progress_from_json(p) for device, p in dict(doc["devices"]).items()
            }
            sizes = tuple(_int(size) for size in doc["sizes"])
            batch = _int(doc["batch"])
            if not 0 <= batch < len(sizes):
                raise ValueError(f"batch {batch} is not one of {len(sizes)} batches")
            return RolloutState(
                state=state,
                order=tuple(_text(device) for device in doc["order"]),
                sizes=sizes,
                batch=batch,
                devices=devices,
                reason=_text(doc["reason"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a rollout state: {exc!r}") from exc


def _progress_from_json(doc: Any) -> DeviceProgress:
    since = doc["healthySince"]
    return DeviceProgress(
        batch=_int(doc["batch"]),
        activated_at=_float(doc["activatedAt"]),
        outcome=_one_of(doc["outcome"], _OUTCOMES),
        healthy_since=None if since is None else _float(since),
        restarts={_text(module): _int(n) for module, n in dict(doc["restarts"]).items()},
        reason=_text(doc["reason"]),
    )


def _one_of(value: Any, allowed: tuple[str, ...]) -> Any:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {allowed}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{value!r} is not a number")
    return value


# ---------------------------------------------------------------------- transitions
def _rank(device: str) -> tuple[str, str]:
    return hashlib.sha256(device.encode()).hexdigest(), device


def start(spec: RolloutSpec, targeted: Iterable[str], now: float) -> RolloutState:
    """Order the targeted devices, fix the batch sizes and activate the first batch."""
    order = tuple(sorted(set(targeted), key=_rank))
    state = RolloutState("inProgress", order, batch_sizes(spec, len(order)), 0, {})
    return _activate(state, frozenset(order), now)


def advance(
    state: RolloutState,
    spec: RolloutSpec,
    targeted: Collection[str],
    observations: Mapping[str, Observation],
    now: float,
) -> RolloutState:
    """One step: follow the target, judge the active devices, then abort, move to the next
    batch (as often as batches are decided at once) or complete. Terminal states stay."""
    if state.state in _TERMINAL:
        return state
    target = frozenset(targeted)
    known = frozenset(state.order)
    joined = sorted((d for d in target if d not in known), key=_rank)
    devices = {
        device: _judge(progress, spec, observations.get(device), now)
        for device, progress in state.devices.items()
        if device in target
    }
    state = replace(state, order=state.order + tuple(joined), devices=devices)
    if state.state == "paused":
        return state
    state = _activate(state, target, now)
    while True:
        decided = bool(target) and state.count("pending") == 0
        aborting = _abort_reason(state, spec, decided)
        if aborting:
            return abort(state, spec, aborting)
        if not decided:
            return state
        if state.batch == len(state.sizes) - 1:
            return replace(state, state="completed", reason="")
        state = _activate(replace(state, batch=state.batch + 1), target, now)


def pause(state: RolloutState) -> RolloutState:
    return replace(state, state="paused") if state.state == "inProgress" else state


def resume(state: RolloutState, now: float) -> RolloutState:
    """Back to inProgress; health clocks ran on while paused, so ``now`` moves none of them and
    the next ``advance`` activates what is due."""
    return replace(state, state="inProgress") if state.state == "paused" else state


def abort(state: RolloutState, spec: RolloutSpec, reason: str) -> RolloutState:
    """Stop by ``spec.on_abort``: rolledBack (the deployment leaves every active device) or
    aborted (they keep it). Terminal states stay."""
    if state.state in _TERMINAL:
        return state
    return replace(
        state, state="rolledBack" if spec.on_abort == "rollback" else "aborted", reason=reason
    )


def rollout_device_sets(before: RolloutState, after: RolloutState) -> frozenset[str]:
    """The devices whose assignment changed from ``before`` to ``after``: activated ones, ones
    that left, and every active one on a rollback."""
    return before.assigned() ^ after.assigned()


def _activate(state: RolloutState, target: frozenset[str], now: float) -> RolloutState:
    """Give the deployment to the targeted devices due in the current batch: those within its
    size in the order, and every device that joined after start."""
    size, total = state.sizes[state.batch], state.sizes[-1]
    due = [
        device
        for index, device in enumerate(state.order)
        if (index < size or index >= total) and device in target and device not in state.devices
    ]
    if not due:
        return state
    devices = dict(state.devices)
    devices.update((device, DeviceProgress(state.batch, now)) for device in due)
    return replace(state, devices=devices)


def _judge(
    progress: DeviceProgress, spec: RolloutSpec, seen: Observation | None, now: float
) -> DeviceProgress:
    if progress.outcome != "pending":
        return progress
    reported = seen is not None and seen.status_code is not None
    since: float | None = None
    restarts: dict[str, int] = {}
    if seen is not None and reported:
        failure = _failure(seen)
        if failure:
            return replace(progress, outcome="failed", reason=failure, healthy_since=None)
        if _all_running(seen):
            restarts = {module: count for module, (_, count) in seen.modules.items()}
            unchanged = progress.healthy_since is not None and restarts == progress.restarts
            since = progress.healthy_since if unchanged else now
    progress = replace(progress, healthy_since=since, restarts=restarts)
    if since is not None and now - since >= spec.min_healthy_secs:
        return replace(progress, outcome="healthy")
    if now - progress.activated_at >= spec.health_timeout_secs:
        limit = _plain(spec.health_timeout_secs)
        reason = f"not healthy within {limit} s" if reported else f"no report within {limit} s"
        return replace(progress, outcome="failed", reason=reason, healthy_since=None)
    return progress


def _failure(seen: Observation) -> str:
    if seen.status_code != 200:
        return f"reported {seen.status_code}"
    for module in sorted(seen.modules):
        status = seen.modules[module][0]
        if status in _FAILING_MODULE:
            return f"module {module} is {status}"
    return ""


def _all_running(seen: Observation) -> bool:
    return seen.expected_modules <= seen.modules.keys() and all(
        status == "running" for status, _ in seen.modules.values()
    )


def _abort_reason(state: RolloutState, spec: RolloutSpec, decided: bool) -> str:
    active = len(state.devices)
    failed = [d for d in state.order if d in state.devices and state.devices[d].outcome == "failed"]
    if not active:
        return ""
    share = len(failed) * 100 / active
    if share <= spec.failed_percent or (active < spec.min_devices and not decided):
        return ""
    named = "; ".join(f"{d}: {state.devices[d].reason}" for d in failed[:_REASON_DEVICES])
    more = len(failed) - _REASON_DEVICES
    return (
        f"{len(failed)} of {active} updated devices failed "
        f"({_plain(round(share, 1))}% > {_plain(spec.failed_percent)}%): {named}"
        + (f"; and {more} more" if more > 0 else "")
    )
