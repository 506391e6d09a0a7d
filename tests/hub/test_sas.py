"""Shared access signatures (pure): tokens made by the azure-iot-hub SDK's own SasToken."""

from __future__ import annotations

import base64

import pytest
from azure.iot.hub.sastoken import SasToken

from cloud_hub.policies import parse_permissions, resource_hosts
from cloud_hub.settings import HubSettings
from cloud_hub.tokens import has_scope
from edgefleet import sas
from edgefleet.sas import PolicyKeys, SasRejected

PRIMARY = base64.b64encode(b"p" * 32).decode()
SECONDARY = base64.b64encode(b"s" * 32).decode()
OWNER = PolicyKeys("iothubowner", PRIMARY, SECONDARY, frozenset({"admin"}))
POLICIES = {OWNER.name: OWNER}
HOSTS = frozenset({"hub.example.test", "hub.example.test:8443"})


def sdk_token(uri: str, key: str = PRIMARY, name: str = "iothubowner", ttl: int = 3600) -> str:
    """The Authorization value the SDK sends, without the scheme."""
    return str(SasToken(uri, key, name, ttl)).removeprefix("SharedAccessSignature ")


def check(token: str, now: float | None = None, path: str = "/devices") -> PolicyKeys:
    parsed = sas.parse(token)
    clock = int(parsed.expiry) - 60 if now is None else now
    return sas.verify(parsed, POLICIES, clock, HOSTS, path).policy


def test_sdk_tokens_verify_with_either_key_and_the_port_in_the_host() -> None:
    assert check(sdk_token("hub.example.test:8443")) is OWNER
    assert check(sdk_token("hub.example.test", key=SECONDARY)) is OWNER
    assert check(sdk_token("HUB.example.test:8443")) is OWNER  # host names are case-blind


def test_expiry_is_exclusive_and_compared_with_the_hub_clock() -> None:
    token = sdk_token("hub.example.test:8443")
    expiry = int(sas.parse(token).expiry)
    assert check(token, now=expiry - 1) is OWNER
    with pytest.raises(SasRejected, match="expired"):
        check(token, now=expiry)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (sdk_token("hub.example.test:8443", key=base64.b64encode(b"x" * 32).decode()), "match"),
        (sdk_token("hub.example.test:8443", name="nobody"), "no shared access policy"),
        (sdk_token("other.example.test"), "another resource"),
        (sdk_token("hub.example.test:9999"), "another resource"),
        ("sr=hub.example.test&sig=abc&skn=iothubowner", "lacks 'se'"),
        ("sr=hub.example.test&sig=abc&se=soon&skn=iothubowner", "seconds since the epoch"),
        ("sr=hub.example.test&sig=abc&se=\u00b2&skn=iothubowner", "seconds since the epoch"),
        ("sr=a&sr=b&sig=abc&se=1&skn=iothubowner", "malformed"),
        ("just-garbage", "malformed"),
    ],
)
def test_refusals_say_why(token: str, reason: str) -> None:
    with pytest.raises(SasRejected, match=reason):
        check(token, now=0)


def test_a_token_signed_for_one_hub_resource_does_not_verify_for_another() -> None:
    token = sdk_token("hub.example.test:8443")
    forged = token.replace("hub.example.test%3A8443", "hub.example.test")
    with pytest.raises(SasRejected, match="match"):
        check(forged, now=0)


def test_a_resource_path_narrows_the_token_to_the_requests_below_it() -> None:
    token = sdk_token("hub.example.test:8443/devices")
    assert check(token, path="/devices/cam-1") is OWNER
    assert check(token, path="/devices") is OWNER
    with pytest.raises(SasRejected, match="another resource"):
        check(token, path="/devicesX")
    with pytest.raises(SasRejected, match="another resource"):
        check(token, path="/twins/cam-1")


def test_resource_hosts_are_the_public_name_and_bind_address_with_their_ports() -> None:
    settings = HubSettings(host="127.0.0.1", port=8080, tls_port=8443, public_host_name="Hub.X")
    assert resource_hosts(settings) == {
        "hub.x",
        "hub.x:8443",
        "hub.x:8080",
        "127.0.0.1",
        "127.0.0.1:8443",
        "127.0.0.1:8080",
    }


def test_permissions_accept_scopes_and_iot_hub_rights() -> None:
    assert parse_permissions(["RegistryRead,ServiceConnect"]) == {
        "registry:read",
        "service",
        "deploy",
    }
    assert parse_permissions(["registryWrite", "admin"]) == {
        "registry:read",
        "registry:write",
        "admin",
    }
    with pytest.raises(Exception, match="DeviceConnect"):
        parse_permissions(["DeviceConnect"])
    with pytest.raises(Exception, match="unknown permission"):
        parse_permissions(["Everything"])


def test_service_scope_writes_twins_and_calls_methods_but_changes_no_identity() -> None:
    service = frozenset({"service", "deploy"})
    assert has_scope(service, "twins:write") and has_scope(service, "service:connect")
    assert has_scope(service, "configurations:read") and has_scope(service, "deploy")
    assert not has_scope(service, "registry:write")
    assert not has_scope(service, "registry:read")
    reader = frozenset({"registry:read"})
    assert has_scope(reader, "twins:read") and not has_scope(reader, "twins:write")
    writer = frozenset({"registry:read", "registry:write"})
    assert has_scope(writer, "twins:write") and not has_scope(writer, "deploy")
