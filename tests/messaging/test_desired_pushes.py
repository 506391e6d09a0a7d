"""Desired pushes leave the request thread through a queue: none lost, none out of order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import create_device, device_client, stop_managed_mosquitto, wait_until

PATCHES = 60


@pytest.fixture(scope="module", params=["embedded", "mosquitto"])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp(f"hub-push-{request.param}")
    try:
        with running_hub(tmp, broker=request.param) as running:
            yield running
    finally:
        stop_managed_mosquitto(tmp / "hub")


def test_rapid_desired_patches_arrive_in_order(hub: RunningHub, tmp_path: Path) -> None:
    create_device(hub, "dev-rapid")
    client = device_client(hub, "dev-rapid", tmp_path)
    pushes: list[dict[str, Any]] = []
    client.on_twin_desired_properties_patch_received = pushes.append
    client.connect(20)
    try:
        start = client.get_twin()["desired"]["$version"]
        with hub.client() as api:
            for i in range(PATCHES):
                api.patch_twin("dev-rapid", {"properties": {"desired": {"step": i}}})
            final = api.get_twin("dev-rapid")["properties"]["desired"]
        assert final["step"] == PATCHES - 1

        # the device client drops a push not newer than the last one, so a reordering would
        # show up as a missing step
        def stepped() -> list[dict[str, Any]]:  # not the resync of the empty twin on connect
            return [x for x in pushes if "step" in x]

        assert wait_until(lambda: len(stepped()) >= PATCHES)
        assert [x["step"] for x in stepped()] == list(range(PATCHES))
        versions = [x["$version"] for x in stepped()]
        assert versions == list(range(start + 1, start + PATCHES + 1))
    finally:
        client.shutdown()
