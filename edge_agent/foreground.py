"""Run the agent in the foreground until SIGTERM/SIGINT (shared by the CLI and ``-m``)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path


def run_daemon(config: str | Path) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # first: a stop during start-up is clean too
        signal.signal(sig, lambda *_: stop.set())
    from edge_agent.assembly import build_agent
    from edge_agent.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        agent = build_agent(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    agent.start()
    logging.getLogger("edgefleet.agent").info("agent %s running", agent.device_id)
    while not stop.wait(1):
        pass
    agent.stop()
    return 0
