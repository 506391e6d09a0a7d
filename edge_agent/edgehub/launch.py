"""The edge hub as its own process: ``python -m edge_agent.edgehub CONFIG.json``.

For a system module or a test; it prints one JSON line
``{"port": ..., "iothubPort": ..., "env": {module: {...}}}`` once it listens. ``iothub_host``,
``iothub_port``, ``https_port``, ``gateway_hostname`` and ``iothub_hostname`` in the config serve
IoT Edge's module environment, as ``EdgeHubConfig`` describes. With ``stats_path`` it rewrites
its counters there every half second. Inside the agent the hub is built by the agent's assembly
(``edge_agent.assembly``) instead.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from edge_agent.edgehub.hub import EdgeHub, EdgeHubConfig
from edgefleet.files import atomic_write_json

log = logging.getLogger("edgefleet.edgehub")


def _upstream(cfg: dict[str, Any], device_id: str, data_dir: Path) -> Any:
    from edgefleet.sdk.device_client import DeviceClient

    up = cfg.get("upstream")
    if not up:
        return None
    client = DeviceClient(
        device_id,
        up["host"],
        int(up["port"]),
        username=up.get("username"),
        password=up.get("password"),
        symmetric_key=up.get("symmetric_key"),
        tls=bool(up.get("tls", False)),
        ca_file=up.get("ca_file"),
        outbox_path=data_dir / "upstream-outbox.db",
        backoff_base=float(up.get("backoff_base", 0.2)),
        backoff_max=float(up.get("backoff_max", 2.0)),
    )
    return client


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m edge_agent.edgehub CONFIG.json", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = json.loads(Path(args[0]).read_text())
    device_id = cfg["device_id"]
    data_dir = Path(cfg["data_dir"])
    upstream = _upstream(cfg, device_id, data_dir)
    hub = EdgeHub(
        EdgeHubConfig(
            device_id=device_id,
            data_dir=data_dir,
            port=int(cfg.get("port", 0)),
            store_max_bytes=int(cfg.get("store_max_bytes", 0)),
            iothub_host=cfg.get("iothub_host"),
            iothub_port=int(cfg.get("iothub_port", 8883)),
            https_port=int(cfg.get("https_port", 443)),
            gateway_hostname=cfg.get("gateway_hostname"),
            iothub_hostname=cfg.get("iothub_hostname"),
        ),
        upstream,
    )
    if cfg.get("desired"):
        hub.apply_desired(cfg["desired"])
    hub.start()
    env = {m: hub.module_env(m) for m in cfg.get("modules", [])}
    if upstream is not None:
        threading.Thread(target=_connect, args=(upstream,), daemon=True).start()
    print(json.dumps({"port": hub.port, "iothubPort": hub.iothub_port, "env": env}), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    stats_path = cfg.get("stats_path")
    while not done.wait(0.5):
        if stats_path:
            atomic_write_json(Path(stats_path), hub.stats(), mode=0o644)
    hub.stop()
    if upstream is not None:
        upstream.shutdown()
    return 0


def _connect(upstream: Any) -> None:
    try:
        upstream.connect(timeout=3600)
    except Exception:  # noqa: BLE001 - keeps retrying in its own thread
        log.warning("upstream not reachable yet")
