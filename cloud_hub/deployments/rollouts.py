"""Stepping staged rollouts: observe the devices, advance the pure state machine, persist.

Each step holds the configuration's row lock (PostgreSQL) or the single writer (SQLite) from
reading the state to saving it, so two hub processes advance one rollout once. The state lives
in the database, so a hub killed mid-rollout resumes where it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cloud_hub.db import Database
from cloud_hub.deployments import rollout as machine
from cloud_hub.deployments.assignment import deployment_modules
from cloud_hub.deployments.rollout import Observation, RolloutState
from cloud_hub.deployments.store import (
    ConfigurationNotFound,
    Configurations,
    StoredConfiguration,
    configuration_json,
)
from cloud_hub.deployments.targets import targeted_devices
from cloud_hub.errors import InvalidInput
from cloud_hub.models import TwinRow
from cloud_hub.twin_query import Queries
from cloud_hub.twins import twin_from_row, twin_select

log = logging.getLogger(__name__)

EDGE_AGENT = "$edgeAgent"
ACTIVE_STATES = ("inProgress", "paused")


def observe(config_id: str, modules: Sequence[str], agent_twin: Mapping[str, Any]) -> Observation:
    """What an ``$edgeAgent`` twin says about one deployment on its device.

    The status code counts only once the device reported on the desired version that carries
    this deployment (the twin shows it Applied); module states only with it.
    """
    status = (agent_twin.get("configurations") or {}).get(config_id, {}).get("status")
    desired_version = agent_twin["properties"]["desired"].get("$version")
    reported = agent_twin["properties"]["reported"]
    expected = frozenset(modules)
    if status != "Applied" or reported.get("lastDesiredVersion") != desired_version:
        return Observation(status_code=None, modules={}, expected_modules=expected)
    code = (reported.get("lastDesiredStatus") or {}).get("code")
    reported_modules = reported.get("modules") or {}
    states: dict[str, tuple[str, int]] = {}
    for name in modules:
        entry = reported_modules.get(name)
        if isinstance(entry, dict) and isinstance(entry.get("runtimeStatus"), str):
            states[name] = (entry["runtimeStatus"], int(entry.get("restartCount") or 0))
    return Observation(
        status_code=code if isinstance(code, int) else None,
        modules=states,
        expected_modules=expected,
    )


class RolloutStepper:
    def __init__(
        self,
        db: Database,
        configurations: Configurations,
        clock: Callable[[], float],
    ) -> None:
        self.db = db
        self.configurations = configurations
        self.queries = Queries(db)
        self.clock = clock

    def due(self, configs: Iterable[StoredConfiguration]) -> list[StoredConfiguration]:
        return [
            c
            for c in configs
            if c.rollout is not None
            and (c.rollout_state is None or c.rollout_state.state in ACTIVE_STATES)
        ]

    def step_all(self, configs: Iterable[StoredConfiguration]) -> set[str]:
        """Advance every running rollout once; the devices whose assignment must be redone."""
        devices: set[str] = set()
        for config in self.due(configs):
            try:
                devices |= self.step(config.config_id)
            except ConfigurationNotFound:
                continue  # deleted meanwhile
        return devices

    def step(self, config_id: str) -> set[str]:
        with self.configurations.locked(config_id) as (_session, row):
            if row is None:
                raise ConfigurationNotFound(f"configuration {config_id!r} not found")
            if not row.rollout:
                return set()
            spec = machine.parse_rollout(row.rollout)
            before = RolloutState.from_json(row.rollout_state) if row.rollout_state else None
            if before is not None and before.state not in ACTIVE_STATES:
                return set()
            config = self.configurations.one(config_id)
            targeted = targeted_devices(self.queries, config)
            now = self.clock()
            if before is None:
                after = machine.start(spec, targeted, now)
                changed = set(after.active())
            else:
                observations = self._observe(config, before.active())
                after = machine.advance(before, spec, targeted, observations, now)
                changed = set(machine.rollout_device_sets(before, after))
            if before is None or after.to_json() != before.to_json():
                row.rollout_state = after.to_json()
                if after.state != (before.state if before else None):
                    log.info("rollout %s: %s (%s)", config_id, after.state, after.reason)
            return changed

    def _observe(
        self, config: StoredConfiguration, devices: Iterable[str]
    ) -> dict[str, Observation]:
        ids = sorted(devices)
        modules = deployment_modules(config.sections)
        out: dict[str, Observation] = {}
        with self.db.read_conn() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                stmt = twin_select().where(
                    TwinRow.device_id.in_(chunk), TwinRow.module_id == EDGE_AGENT
                )
                for row in conn.execute(stmt):
                    twin = twin_from_row(row)
                    out[twin["deviceId"]] = observe(config.config_id, modules, twin)
        return out

    def command(self, config_id: str, action: str) -> tuple[dict[str, Any], set[str]]:
        """pause / resume / abort by hand; returns the configuration JSON and devices to redo."""
        with self.configurations.locked(config_id) as (session, row):
            if row is None:
                raise ConfigurationNotFound(f"configuration {config_id!r} not found")
            if not row.rollout:
                raise InvalidInput(f"configuration {config_id!r} has no rollout", path="rollout")
            if not row.rollout_state:
                raise InvalidInput("the rollout has not started yet", path="rolloutStatus")
            spec = machine.parse_rollout(row.rollout)
            before = RolloutState.from_json(row.rollout_state)
            if before.state not in ACTIVE_STATES:
                raise InvalidInput(
                    f"the rollout is {before.state}; only a running or paused one can {action}",
                    path="rolloutStatus.state",
                )
            if action == "pause":
                after = machine.pause(before)
            elif action == "resume":
                after = machine.resume(before, self.clock())
            else:
                after = machine.abort(before, spec, "aborted by the operator")
            row.rollout_state = after.to_json()
            session.flush()
            return configuration_json(row), set(machine.rollout_device_sets(before, after))
