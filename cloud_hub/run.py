"""One hub process: open the hub, build the app, serve it on its listeners until a signal.

``hub serve`` runs it directly; with ``--workers N`` each worker process runs it on the
listening sockets its supervisor bound (``cloud_hub/workers.py``).
"""

from __future__ import annotations

import socket
from pathlib import Path

from cloud_hub import endpoint, serving
from cloud_hub.settings import HubSettings


class HubStartError(Exception):
    """The hub cannot start; the message is one line for the user."""


def listeners(settings: HubSettings) -> list[serving.Listener]:
    """HTTP on ``port`` and, with ``tls_port``, HTTPS."""
    found = [serving.Listener(settings.host, settings.port)]
    if settings.tls_port is not None:
        found.append(serving.Listener(settings.host, settings.tls_port, *https_files(settings)))
    return found


def https_files(settings: HubSettings) -> tuple[Path, Path]:
    """The HTTPS certificate and key: the given files, or issued by the hub CA for the public
    host name and the bind address."""
    from edgefleet.ca import HubCA

    if settings.tls_cert is not None and settings.tls_key is not None:
        return settings.tls_cert, settings.tls_key
    names = [settings.resolved_public_host_name(), settings.host, "localhost", "127.0.0.1"]
    wanted = [n for n in dict.fromkeys(names) if n not in ("", "0.0.0.0", "::")]
    return HubCA((settings.data_dir / "ca").resolve()).ensure_https(wanted)


def run_hub(
    settings: HubSettings, access_log: bool, sockets: list[socket.socket] | None = None
) -> bool:
    """Serve until SIGTERM or Ctrl-C; True when it started. ``sockets``: listening sockets
    already bound (one per listener), else bound here. HubStartError when it cannot start."""
    from sqlalchemy.exc import SQLAlchemyError

    from cloud_hub.app import create_app
    from cloud_hub.broker.preflight import mqtt_port_problem
    from cloud_hub.hub import open_hub

    extra = settings.model_extra or {}
    serving.configure_logging(settings.log_level)
    try:
        hub = open_hub(settings)
    except (SQLAlchemyError, OSError) as exc:
        raise HubStartError(f"cannot open the database: {str(exc).splitlines()[0]}") from None
    try:
        broker = str(extra.get("broker") or "embedded")
        problem = mqtt_port_problem(
            settings.data_dir, broker, settings.host, int(extra.get("mqtt_port") or 0)
        )
        if problem:
            raise HubStartError(problem)
        app = create_app(hub=hub)
        if sockets is None:
            endpoint.record(settings)
        ui = hub.extensions.get("ui")
        # open dashboard streams end at once, not after the graceful timeout
        on_stop = [ui.stopping.set] if ui is not None else []
        try:
            return serving.serve(
                app,
                listeners(settings),
                on_stop,
                sockets=sockets,
                log_level=settings.log_level,
                timeout_graceful_shutdown=10,
                access_log=access_log,
            )
        except serving.ListenError as exc:
            raise HubStartError(str(exc)) from None
    finally:
        hub.close()
