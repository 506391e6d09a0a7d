"""The hub's service container: what REST handlers, the MQTT side and tests call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cloud_hub.db import Database
from cloud_hub.enrollments import Enrollments
from cloud_hub.events import EventBus
from cloud_hub.logstore import LogUploads
from cloud_hub.policies import AccessPolicies, resource_hosts
from cloud_hub.registry import Registry
from cloud_hub.settings import HubSettings
from cloud_hub.tokens import Tokens
from cloud_hub.twin_commit import TwinCommitter
from cloud_hub.twins import Twins

log = logging.getLogger(__name__)


@dataclass
class BackgroundService:
    """Something that runs while the hub serves (MQTT worker, broker, schedulers)."""

    name: str
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]


@dataclass
class Hub:
    settings: HubSettings
    db: Database
    events: EventBus
    registry: Registry
    twins: Twins
    tokens: Tokens
    policies: AccessPolicies
    enrollments: Enrollments
    log_uploads: LogUploads
    background: list[BackgroundService] = field(default_factory=list)
    #: services an extension keeps for its routes (``extensions["deployments"]``)
    extensions: dict[str, Any] = field(default_factory=dict)
    #: group commit of the REST API's twin writes (see cloud_hub.twin_commit)
    twin_commit: TwinCommitter = field(init=False)

    def __post_init__(self) -> None:
        self.twin_commit = TwinCommitter(self.twins)

    def add_background(self, service: BackgroundService) -> None:
        """Started in order when the app starts, stopped in reverse order when it stops."""
        self.background.append(service)

    def close(self) -> None:
        self.twin_commit.close()
        self.db.dispose()


def open_hub(settings: HubSettings, *, migrate: bool = True) -> Hub:
    """Connect to the database (migrating it to the newest schema) and build the services."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url())
    if migrate:
        db.migrate()
    bus = EventBus()
    registry = Registry(db, bus)
    hub = Hub(
        settings=settings,
        db=db,
        events=bus,
        registry=registry,
        twins=Twins(db, bus),
        tokens=Tokens(db),
        policies=AccessPolicies(db, resource_hosts(settings)),
        enrollments=Enrollments(db, registry),
        log_uploads=LogUploads(db),
    )
    if migrate:
        hub.enrollments.import_legacy_file(settings.data_dir)
    return hub
