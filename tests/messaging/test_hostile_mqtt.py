"""What an attacker with a valid device identity sends over MQTT (malformed frames, oversized and
non-JSON payloads, hostile topics, another device's topics) against a hub of every broker mode,
and the parsers under mutated text: counted by ``edgefleet chaos hostile``'s own code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from composition.hostile import inputs
from composition.hostile.mqtt_attack import _frames
from composition.hostile.parsers import fuzz, targets
from composition.hostile.run import attack_hub
from edgefleet import mqtt_packets as mp
from tests.support.hub import RunningHub, running_hub
from tests.support.mqtt import mosquitto, stop_managed_mosquitto

CASES = 24


@pytest.fixture(scope="module", params=["embedded", "mosquitto", "external"])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp(f"hub-hostile-{request.param}")
    with ExitStack() as stack:
        broker = request.param
        if broker == "external":
            ext = stack.enter_context(mosquitto(tmp / "ext"))
            broker = f"mqtt://127.0.0.1:{ext.port}"
        try:
            with running_hub(tmp, broker=broker) as running:
                yield request.param, running
        finally:
            stop_managed_mosquitto(tmp / "hub")


def test_hostile_device_traffic_neither_crashes_nor_leaks_nor_crosses_devices(
    hub: tuple[str, RunningHub], tmp_path: Path
) -> None:
    mode, running = hub
    headers = {"Authorization": f"Bearer {running.token}"}
    with httpx.Client(base_url=running.url, headers=headers, timeout=30) as api:
        result = attack_hub(api, running.process.pid, mode, CASES, 7, tmp_path)
    assert result["inputs"] == CASES
    assert result["crashes"] == 0 and running.process.poll() is None
    assert result["leaks"] == 0, result
    assert result["goodMessageStored"], result
    if mode != "external":  # the hub's broker ACLs, not an external broker's
        assert result["victimMessages"] == 0, result
    assert result["passed"], result
    # every case got an answer of some kind, and the well-framed ones left the link usable
    assert sum(result["outcomes"].values()) == CASES
    assert result["outcomes"].get("connect refused", 0) == 0
    assert "Traceback" not in running.log()


def test_every_parser_rejects_or_answers_mutated_text() -> None:
    for target in targets():
        report = fuzz(target, 150, 3, budget_s=10.0)  # a hang, not a speed, fails here
        assert report.inputs == 150
        assert report.crashes == 0, report.examples
        assert report.slow == 0, report.examples
        assert 0 < report.rejected or target.name == "IoT Hub dialect topics"


def test_a_parser_that_raises_the_wrong_error_is_counted_as_a_crash() -> None:
    def brittle(text: str) -> object:
        return int(text)

    report = fuzz(type(targets()[0])("brittle", brittle, ["1", "22"], (OverflowError,)), 40, 1)
    assert report.crashes > 0 and report.examples
    assert report.inputs == 40


def test_cases_are_the_same_for_the_same_seed_and_frames_parse() -> None:
    one = inputs.mqtt_cases("a", "b", 40, 5, 1024)
    assert one == inputs.mqtt_cases("a", "b", 40, 5, 1024)
    assert one != inputs.mqtt_cases("a", "b", 40, 6, 1024)
    assert len({case.kind for case in one}) > 10
    publish = inputs.publish_packet(b"t/1", b"x" * 300)
    assert _frames(publish + inputs.PINGREQ) == [3, 12]
    assert _frames(publish[:-1]) == []
    assert mp.encode_length(321) == b"\xc1\x02"
