"""QoS 1 telemetry through the embedded broker under load: a device that got its PUBACK never
loses the message, even when it disconnects at once and the hub is still far behind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet import protocol as p
from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import create_device, credentials, stored_message_ids

DEVICES = 4
PER_DEVICE = 1000  # offered far faster than the hub stores (a few hundred a second here)
SETTLE_S = 10.0
"""Stop waiting once nothing more was stored for this long (the failure then shows the gap)."""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with running_hub(tmp_path_factory.mktemp("hub-backpressure"), broker="embedded") as running:
        yield running


def _client(creds: dict[str, Any]) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=creds["username"], protocol=mqtt.MQTTv311
    )
    client.username_pw_set(creds["username"], creds["password"])
    client.tls_set(ca_certs=creds["ca_file"])
    client.max_inflight_messages_set(1000)
    client.connect(creds["host"], creds["port"])
    client.loop_start()
    return client


def _wait_settled(hub: RunningHub, device_ids: list[str], total: int) -> dict[str, list[str]]:
    """Every device's stored message ids once all ``total`` are stored or storing stalled."""
    last, stalled_since = -1, time.monotonic()
    while True:
        stored = {d: stored_message_ids(hub, d) for d in device_ids}
        count = sum(len(ids) for ids in stored.values())
        if count >= total:
            return stored
        if count != last:
            last, stalled_since = count, time.monotonic()
        elif time.monotonic() - stalled_since > SETTLE_S:
            return stored
        time.sleep(0.5)


def test_acknowledged_burst_is_stored_after_devices_disconnect(hub: RunningHub) -> None:
    device_ids = [f"load-{i}" for i in range(DEVICES)]
    clients = []
    for device_id in device_ids:
        create_device(hub, device_id)
        clients.append((device_id, _client(credentials(hub, device_id))))
    infos = []
    for n in range(PER_DEVICE):
        for device_id, client in clients:
            bag = {p.SYS_MESSAGE_ID: f"{device_id}-{n}"}
            infos.append(client.publish(p.telemetry_topic(device_id, bag), b'{"v":1}', qos=1))
    for info in infos:
        info.wait_for_publish(300)
        assert info.is_published()  # the broker sent its PUBACK
    for _device_id, client in clients:  # gone right after the last PUBACK
        client.disconnect()
        client.loop_stop()

    stored = _wait_settled(hub, device_ids, DEVICES * PER_DEVICE)
    for device_id in device_ids:
        expected = {f"{device_id}-{n}" for n in range(PER_DEVICE)}
        missing = expected - set(stored[device_id])
        assert not missing, f"{device_id}: {len(missing)} acknowledged messages never stored"
        assert len(stored[device_id]) == PER_DEVICE  # and none twice
