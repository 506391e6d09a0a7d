"""System and custom metrics of configurations: counts of IoT Hub queries over the twins.

Refreshing costs one query per metric per configuration; the worker refreshes at most once per
``metrics_interval`` however many reported patches arrive, so a busy fleet does not turn every
patch into a scan. Queries whose condition SQL answers exactly (``targetedCount`` on tags,
``appliedCount``) are counted by the database, without building twin documents.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from cloud_hub.deployments.store import Configurations, StoredConfiguration
from cloud_hub.errors import HubError
from cloud_hub.twin_query import Queries

log = logging.getLogger(__name__)


def count(queries: Queries, text: str) -> int:
    """How many results a metric query has (a query that fails now counts as 0, and is logged)."""
    try:
        return queries.count(text)
    except HubError as exc:
        log.warning("metric query %r failed: %s", text, exc)
        return 0


def refresh_metrics(
    configurations: Configurations, queries: Queries, configs: Iterable[StoredConfiguration]
) -> None:
    for config in configs:
        system = {name: count(queries, text) for name, text in config.system_queries().items()}
        custom = {name: count(queries, text) for name, text in config.metric_queries.items()}
        configurations.save_metrics(config.config_id, system, custom)
