"""The operator dashboard at ``/ui``: server-rendered pages over the hub's service layer, with
htmx and Server-Sent Events for live parts. Sessions are in memory (see ``sessions``); the
scripts, styles and chart library ship in ``static/``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from cloud_hub.hub import Hub
from cloud_hub.ui.sessions import LoginCodes, SessionStore
from cloud_hub.ui.web import UiState, install_handlers

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI, hub: Hub) -> None:
    from cloud_hub.ui import pages_deployments, pages_device, pages_fleet, pages_session

    state = UiState(hub, SessionStore(), LoginCodes())
    app.state.ui = state
    hub.extensions["ui"] = state
    install_handlers(app)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    for module in (pages_session, pages_fleet, pages_device, pages_deployments):
        app.include_router(module.router, include_in_schema=False)
