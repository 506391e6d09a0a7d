"""Embedded brokers started one after another in one process (as a long-lived test run or a
hub restarted in place does) each decide their own listeners' certificate policy."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from fastapi.testclient import TestClient

from cloud_hub.app import create_app
from cloud_hub.hub import open_hub
from cloud_hub.settings import HubSettings


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _health_of_hub_on(data_dir: Path, port: int, cert_port: int) -> dict[str, object]:
    (data_dir / "broker").mkdir(parents=True)
    (data_dir / "broker" / "ports.json").write_text(
        json.dumps({"port": port, "cert_port": cert_port})
    )
    hub = open_hub(HubSettings(data_dir=data_dir, host="127.0.0.1"))
    try:
        with TestClient(create_app(hub=hub)) as client:
            answer: dict[str, object] = client.get("/health").json()
            return answer
    finally:
        hub.close()


def test_a_port_that_was_a_certificate_listener_before_takes_password_clients(
    tmp_path: Path,
) -> None:
    first, second, third = _free_ports(3)
    assert _health_of_hub_on(tmp_path / "a", first, second)["status"] == "ok"
    # the earlier broker's certificate port is now this broker's password listener: the hub's
    # own service client (user name and password, no certificate) must still get in
    assert _health_of_hub_on(tmp_path / "b", second, third)["status"] == "ok"
