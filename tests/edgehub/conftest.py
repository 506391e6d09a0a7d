"""The cloud hub that edge hub tests needing real twins and telemetry use as upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import stop_managed_mosquitto


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """A cloud hub with its mosquitto broker (TLS), one per test module."""
    tmp = tmp_path_factory.mktemp("cloudhub")
    try:
        with running_hub(tmp, broker="mosquitto") as running:
            yield running
    finally:
        stop_managed_mosquitto(tmp / "hub")
