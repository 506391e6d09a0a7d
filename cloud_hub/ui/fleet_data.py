"""The fleet page's reads: one keyset page of the query engine, the page's ``$edgeAgent`` twins in
one statement, and the fleet counts (cached briefly, shared by every open dashboard)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, cast, func, or_, select

from cloud_hub.db import Database
from cloud_hub.hub import Hub
from cloud_hub.models import DEVICE_TWIN, DeviceRow, TwinRow
from cloud_hub.twin_query import Queries
from cloud_hub.twins import twin_from_row, twin_select
from cloud_hub.ui.views import FAILED_RUNTIME_STATUSES, FleetRow, failed_modules, fleet_row

PAGE_SIZE = 50
AGENT = "$edgeAgent"


@dataclass
class FleetPage:
    rows: list[FleetRow]
    next_token: str | None


@dataclass(frozen=True)
class FleetCounts:
    devices: int
    online: int
    offline: int
    edge: int
    #: edge devices with at least one module failed, in backoff or unhealthy
    failed_module_devices: int


def agent_twins(db: Database, device_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not device_ids:
        return {}
    stmt = twin_select().where(TwinRow.device_id.in_(device_ids), TwinRow.module_id == AGENT)
    with db.read_conn() as conn:
        twins = [twin_from_row(row) for row in conn.execute(stmt)]
    return {t["deviceId"]: t for t in twins}


def fleet_page(hub: Hub, query_text: str, continuation: str | None) -> FleetPage:
    page = Queries(hub.db).run(query_text, PAGE_SIZE, continuation)
    twins: list[Mapping[str, Any]] = page.items
    edge_ids = [t["deviceId"] for t in twins if (t.get("capabilities") or {}).get("iotEdge")]
    agents = agent_twins(hub.db, edge_ids)
    rows = [fleet_row(t, agents.get(t["deviceId"])) for t in twins]
    return FleetPage(rows, page.continuation)


def count_fleet(db: Database) -> FleetCounts:
    with db.read_conn() as conn:
        by_state = dict(
            conn.execute(
                select(DeviceRow.connection_state, func.count()).group_by(
                    DeviceRow.connection_state
                )
            ).all()
        )
        edge = conn.execute(
            select(func.count()).select_from(DeviceRow).where(DeviceRow.iot_edge.is_(True))
        ).scalar_one()
        # Only agents whose report mentions a failing status are read and checked exactly.
        text = cast(TwinRow.reported, String)
        suspects = conn.execute(
            select(TwinRow.reported).where(
                TwinRow.module_id == AGENT,
                TwinRow.module_id != DEVICE_TWIN,
                or_(*[text.like(f'%"{s}"%') for s in sorted(FAILED_RUNTIME_STATUSES)]),
            )
        ).scalars()
        failed = sum(1 for reported in suspects if failed_modules(reported or {}))
    online = int(by_state.get("Connected", 0))
    total = int(sum(by_state.values()))
    return FleetCounts(total, online, total - online, int(edge), failed)


class CountsCache:
    """Fleet counts recomputed at most every ``max_age`` seconds, and only when asked for."""

    def __init__(self, db: Database, max_age: float = 1.0) -> None:
        self.db = db
        self.max_age = max_age
        self._lock = threading.Lock()
        self._value: tuple[float, FleetCounts] | None = None

    def get(self) -> FleetCounts:
        with self._lock:
            now = time.monotonic()
            if self._value is None or now - self._value[0] > self.max_age:
                self._value = (now, count_fleet(self.db))
            return self._value[1]
