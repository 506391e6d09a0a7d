"""Which filters a hub process subscribes to, alone or as one of several on a shared broker."""

from __future__ import annotations

import pytest

from cloud_hub.mqtt.subscriptions import client_id, hub_filters, validate_instance
from edgefleet import protocol as p


def test_a_single_hub_subscribes_plainly_under_its_fixed_client_id() -> None:
    assert hub_filters(None) == p.HUB_SUBSCRIPTIONS
    assert client_id(None) == p.HUB_USERNAME


def test_instances_share_the_work_but_each_sees_method_answers_and_presence() -> None:
    filters = hub_filters("w1")
    plain = [f for f in filters if not f.startswith("$share/")]
    assert plain == [
        "devices/+/methods/res/#",
        "devices/+/modules/+/methods/res/#",
        "devices/+/presence",
    ]
    shared = [f.removeprefix("$share/edgefleet-hub/") for f in filters if f not in plain]
    assert "devices/+/messages/events/#" in shared and "devices/+/twin/reported/#" in shared
    assert sorted(shared + plain) == sorted(p.HUB_SUBSCRIPTIONS)
    assert client_id("w1") == "$edgefleet-hub-w1" != client_id("w2")


@pytest.mark.parametrize("name", ["", "a/b", "x" * 33, "sp ace", "+", "#"])
def test_instance_names_are_plain(name: str) -> None:
    with pytest.raises(ValueError, match="instance name"):
        validate_instance(name)
