"""Which devices a configuration targets, and which it reached (queries over the stored twins)."""

from __future__ import annotations

from cloud_hub.deployments.store import StoredConfiguration
from cloud_hub.twin_query import Queries


def _ids(queries: Queries, text: str) -> set[str]:
    return queries.device_ids(text)


def targeted_devices(queries: Queries, config: StoredConfiguration) -> set[str]:
    """Devices whose twin matches the target condition (edge devices for an edge deployment)."""
    return _ids(queries, config.system_queries()["targetedCount"])


def reached_devices(queries: Queries, config_id: str) -> set[str]:
    """Devices whose twin (or one of its module twins) shows the configuration."""
    where = f"configurations.[[{config_id}]].status IN ['Applied', 'Targeted']"
    return _ids(queries, f"SELECT deviceId FROM devices WHERE {where}") | _ids(
        queries, f"SELECT deviceId FROM devices.modules WHERE {where}"
    )


def affected_devices(
    queries: Queries, before: StoredConfiguration | None, after: StoredConfiguration | None
) -> set[str]:
    """Devices whose assignment a create, change or delete of one configuration may change."""
    config = after or before
    if config is None:
        return set()
    devices = reached_devices(queries, config.config_id)
    if after is not None:
        devices |= targeted_devices(queries, after)
    return devices
