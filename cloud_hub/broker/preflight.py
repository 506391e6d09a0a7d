"""Checks made before the hub starts its broker, so a taken port is one clear line, not a
failed startup deep inside the broker."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

DEFAULT_MQTT_PORT = 8883  # where IoT Hub's device SDKs connect: HostName:8883


def port_taken(host: str, port: int) -> bool:
    """True when another socket is bound to (host, port) (a bind here would fail)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def own_broker_running(data_dir: Path) -> bool:
    """A mosquitto this hub started earlier still runs (the hub adopts it, port included)."""
    pid_file = data_dir / "broker" / "mosquitto.pid"
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"mosquitto" in cmdline and str(pid_file.parent.resolve()).encode() in cmdline


def mqtt_port_problem(data_dir: Path, broker: str, host: str, port: int) -> str | None:
    """Why the hub's own broker cannot listen on ``host:port``, or None."""
    if broker not in ("embedded", "mosquitto") or port == 0:
        return None
    if broker == "mosquitto" and own_broker_running(data_dir):
        return None
    if not port_taken(host, port):
        return None
    return (
        f"MQTT port {host}:{port} is in use by another program; choose another with "
        "--mqtt-port (0: a free port, kept across restarts) or stop that program"
    )
