"""The IoT Hub dialect's per-connection topic mapping and device SAS checks (pure)."""

from __future__ import annotations

import time

import pytest

from edgefleet import iothub_dialect as d
from edgefleet import protocol as p
from edgefleet import sas
from tests.support.device_sdk import device_token

KEY = "c2VjcmV0LWtleS1vZi1kZXZpY2UtYQ=="
DEV = d.IotHubIdentity("dev-a")
MOD = d.IotHubIdentity("dev-a", "filter")


def test_user_names_tell_the_dialects_apart() -> None:
    assert d.is_iothub_username("hub.example.com/dev-a/?api-version=2021-04-12&DeviceClientType=x")
    assert not d.is_iothub_username("dev-a")
    assert not d.is_iothub_username("dev-a/secondary")
    connect = d.parse_connect("Hub.Example.com/dev-a/filter/?api-version=1", "dev-a/filter")
    assert connect.host == "hub.example.com" and connect.identity == MOD
    with pytest.raises(p.ProtocolError):
        d.parse_connect("hub/dev-a/?api-version=1", "dev-b")  # names another client id


@pytest.mark.parametrize(
    ("ident", "topic", "mapped"),
    [
        (DEV, "$iothub/twin/GET/?$rid=1", "devices/dev-a/twin/get/?$rid=1"),
        (
            DEV,
            "$iothub/twin/PATCH/properties/reported/?$rid=2",
            "devices/dev-a/twin/reported/?$rid=2",
        ),
        (DEV, "$iothub/methods/res/200/?$rid=ab", "devices/dev-a/methods/res/200/?$rid=ab"),
        (MOD, "$iothub/twin/GET/?$rid=1", "devices/dev-a/modules/filter/twin/get/?$rid=1"),
        (DEV, "devices/dev-a/messages/events/%24.mid=1", "devices/dev-a/messages/events/%24.mid=1"),
        (DEV, "devices/dev-b/messages/events/", None),
        (MOD, "devices/dev-a/messages/events/", None),
        (DEV, "devices/dev-a/twin/get/?$rid=1", None),
        (DEV, "devices/dev-a/presence", None),
        (DEV, "$iothub/twin/GET/x/?$rid=1", None),
        (DEV, "$iothub/methods/res/ok/?$rid=1", None),
    ],
)
def test_publishes_map_into_the_own_subtree_only(
    ident: d.IotHubIdentity, topic: str, mapped: str | None
) -> None:
    assert d.inbound_publish(ident, topic) == mapped


@pytest.mark.parametrize(
    ("ident", "topic_filter", "mapped"),
    [
        (DEV, "$iothub/twin/res/#", "devices/dev-a/twin/res/#"),
        (DEV, "$iothub/twin/PATCH/properties/desired/#", "devices/dev-a/twin/desired/#"),
        (MOD, "$iothub/methods/POST/#", "devices/dev-a/modules/filter/methods/POST/#"),
        (DEV, "devices/dev-a/messages/devicebound/#", "devices/dev-a/messages/devicebound/#"),
        (MOD, "devices/dev-a/modules/filter/inputs/#", "devices/dev-a/modules/filter/inputs/#"),
        (DEV, "$iothub/#", None),
        (DEV, "devices/#", None),
        (DEV, "devices/+/twin/res/#", None),
        (DEV, "devices/dev-b/messages/devicebound/#", None),
        (DEV, "devices/dev-a/#", None),
    ],
)
def test_filters_map_into_the_own_subtree_only(
    ident: d.IotHubIdentity, topic_filter: str, mapped: str | None
) -> None:
    assert d.inbound_filter(ident, topic_filter) == mapped


def test_deliveries_map_back_to_iothub_topics() -> None:
    assert d.outbound_topic(DEV, "devices/dev-a/twin/res/204/?$rid=2&$version=3") == (
        "$iothub/twin/res/204/?$rid=2&$version=3"
    )
    assert d.outbound_topic(DEV, "devices/dev-a/twin/desired/?$version=4") == (
        "$iothub/twin/PATCH/properties/desired/?$version=4"
    )
    assert d.outbound_topic(MOD, "devices/dev-a/modules/filter/methods/POST/go/?$rid=r") == (
        "$iothub/methods/POST/go/?$rid=r"
    )
    assert d.outbound_topic(DEV, "devices/dev-a/modules/filter/twin/res/200/?$rid=1") is None
    assert d.outbound_topic(DEV, "devices/dev-b/twin/res/200/?$rid=1") is None


def test_device_tokens_are_checked_for_host_identity_expiry_and_key() -> None:
    now = time.time()
    connect = d.parse_connect("hub.local/dev-a/?api-version=1", "dev-a")
    good = device_token("hub.local", "dev-a", KEY, int(now) + 60)
    assert d.verify_device_token(good, connect, (None, KEY), now) == int(now) + 60
    bad = [
        device_token("other.local", "dev-a", KEY, int(now) + 60),
        device_token("hub.local", "dev-b", KEY, int(now) + 60),
        device_token("hub.local", "dev-a", KEY, int(now) - 1),
        device_token("hub.local", "dev-a", "b3RoZXIta2V5", int(now) + 60),
        "SharedAccessSignature sr=hub.local%2Fdevices%2Fdev-a&se=9999999999",
        "not a token",
    ]
    for token in bad:
        with pytest.raises(sas.SasRejected):
            d.verify_device_token(token, connect, (KEY, None), now)
