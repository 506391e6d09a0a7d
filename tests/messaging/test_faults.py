"""Fault tests: a hub killed with SIGKILL and a broker restarted during a burst lose nothing,
store nothing twice and keep each device's order."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from edgefleet import protocol as p
from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import (
    create_device,
    device_client,
    stop_managed_mosquitto,
    stored_message_ids,
    wait_until,
)

DEVICES = 4
PER_DEVICE = 1250  # 5,000 messages in all


def _stats(hub: RunningHub) -> dict[str, Any]:
    with hub.client() as api:
        stats: dict[str, Any] = api.request("GET", "/messaging/stats").json()
    return stats


def _pid_in(pid_file: Path) -> str:
    try:
        return pid_file.read_text().strip()
    except FileNotFoundError:
        return ""


def _burst(clients: list[Any], sent: dict[str, list[str]]) -> list[threading.Thread]:
    def run(client: Any) -> None:
        for i in range(PER_DEVICE):
            sent[client.device_id].append(client.send_message(p.Message.from_body({"i": i})))

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    return threads


def _assert_exactly_once(hub: RunningHub, sent: dict[str, list[str]], clients: list[Any]) -> None:
    for client in clients:
        assert client.wait_for_outbox_empty(120), f"{client.device_id}: outbox not drained"
    total = DEVICES * PER_DEVICE

    def all_stored() -> bool:
        return sum(len(stored_message_ids(hub, d)) for d in sent) >= total

    assert wait_until(all_stored, 120, 0.5)
    for device_id, ids in sent.items():
        stored = stored_message_ids(hub, device_id)
        assert len(stored) == len(set(stored)) == PER_DEVICE
        assert stored == ids, f"{device_id}: stored out of the order sent"


def test_hub_killed_during_burst_stores_every_message_once(tmp_path: Path) -> None:
    sent: dict[str, list[str]] = {f"burst-{i}": [] for i in range(DEVICES)}
    clients: list[Any] = []
    try:
        with running_hub(tmp_path, broker="mosquitto") as first:
            for device_id in sent:
                create_device(first, device_id)
                clients.append(device_client(first, device_id, tmp_path))
            for client in clients:
                client.connect(20)
            threads = _burst(clients, sent)
            assert wait_until(lambda: _stats(first)["stored"] > 500, 60, 0.05)
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(10)
            for thread in threads:
                thread.join(120)
        # the broker outlives the hub; the devices reconnect through the new hub's front end
        with running_hub(tmp_path, broker="mosquitto") as second:
            _assert_exactly_once(second, sent, clients)
    finally:
        for client in clients:
            client.shutdown()
        stop_managed_mosquitto(tmp_path / "hub")


def test_broker_restart_mid_stream_stores_every_message_once(tmp_path: Path) -> None:
    sent: dict[str, list[str]] = {f"restart-{i}": [] for i in range(DEVICES)}
    clients: list[Any] = []
    try:
        with running_hub(tmp_path, broker="mosquitto") as hub:
            for device_id in sent:
                create_device(hub, device_id)
                clients.append(device_client(hub, device_id, tmp_path))
            for client in clients:
                client.connect(20)
            threads = _burst(clients, sent)
            assert wait_until(lambda: _stats(hub)["stored"] > 500, 60, 0.05)
            pid_file = tmp_path / "hub" / "broker" / "mosquitto.pid"
            old_pid = int(pid_file.read_text())
            os.kill(old_pid, signal.SIGTERM)  # the hub restarts it from its persistence file
            # mosquitto deletes its pid file on exit and the restarted one writes it anew
            assert wait_until(lambda: _pid_in(pid_file) not in ("", str(old_pid)), 30)
            time.sleep(0.5)
            for thread in threads:
                thread.join(120)
            _assert_exactly_once(hub, sent, clients)
    finally:
        for client in clients:
            client.shutdown()
        stop_managed_mosquitto(tmp_path / "hub")
