"""POST /devices/query (filled in when the query package lands)."""

from __future__ import annotations

from fastapi import FastAPI

from cloud_hub.services import Hub


def install(app: FastAPI, hub: Hub) -> None:
    return None
