"""Microsoft's service SDK (azure-iot-hub), unmodified, against a real hub over HTTPS.

One hub per module (``hub serve --tls-port``); the SDK trusts the hub CA through
REQUESTS_CA_BUNDLE, as users are told to do (docs/iothub-compat.md).
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import (
    AuthenticationMechanism,
    CloudToDeviceMethod,
    Configuration,
    ConfigurationContent,
    ConfigurationQueriesTestInput,
    DeviceCapabilities,
    ExportImportDevice,
    QuerySpecification,
    Twin,
    TwinProperties,
)
from msrest.exceptions import HttpOperationError

from edgefleet.sdk.methods import MethodRequest, MethodResponse
from tests.support.hub import RunningHub, edgefleet_cmd, running_hub, stop_process
from tests.support.mqtt import device_client, wait_until


@dataclass
class Live:
    hub: RunningHub
    policies: dict[str, dict[str, Any]]

    @property
    def host_name(self) -> str:
        return f"127.0.0.1:{self.hub.tls_port}"

    def connection_string(self, policy: str, key: str | None = None) -> str:
        key = key or self.policies[policy]["primaryKey"]
        return f"HostName={self.host_name};SharedAccessKeyName={policy};SharedAccessKey={key}"

    def registry(self, policy: str = "iothubowner", key: str | None = None) -> Any:
        return IoTHubRegistryManager.from_connection_string(self.connection_string(policy, key))

    def configurations(self, policy: str = "iothubowner") -> Any:
        return IoTHubConfigurationManager.from_connection_string(self.connection_string(policy))


def cli(hub: RunningHub, *args: str) -> str:
    result = subprocess.run(
        edgefleet_cmd(*args, "--data-dir", str(hub.data_dir)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with running_hub(tmp_path_factory.mktemp("sdk"), tls=True) as hub:
        policies = json.loads(cli(hub, "hub", "policy", "list", "--json"))
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("REQUESTS_CA_BUNDLE", str(hub.ca_file))
            yield Live(hub, {p["name"]: p for p in policies})
        # SIGTERM stops the HTTP and the HTTPS listener and the process exits 0
        assert stop_process(hub.process) == 0
        assert "Application shutdown complete" in hub.log()
        # idle keep-alive TLS connections of the SDK do not hold the shutdown to its timeout
        assert "timeout graceful shutdown exceeded" not in hub.log()


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def status_of(call: Callable[[], Any]) -> int:
    with pytest.raises(HttpOperationError) as raised:
        call()
    status: int = raised.value.response.status_code
    return status


def test_connection_string_command_prints_what_the_sdk_connects_with(live: Live) -> None:
    printed = cli(live.hub, "hub", "connection-string", "--policy", "registryRead").strip()
    assert printed == live.connection_string("registryRead")
    ids = [d.device_id for d in IoTHubRegistryManager.from_connection_string(printed).get_devices()]
    assert isinstance(ids, list)
    # bearer tokens keep working, over HTTPS too
    response = httpx.get(
        f"https://{live.host_name}/devices",
        headers={"Authorization": f"Bearer {live.hub.token}"},
        verify=ssl.create_default_context(cafile=live.hub.ca_file),
    )
    assert response.status_code == 200


def test_device_identities_with_sas_and_x509_thumbprints(live: Live) -> None:
    rm = live.registry()
    primary, secondary = new_key(), new_key()
    device = rm.create_device_with_sas("sdk-sas", primary, secondary, "enabled")
    assert device.device_id == "sdk-sas" and device.status == "enabled"
    assert device.authentication.type == "sas"
    assert device.authentication.symmetric_key.primary_key == primary
    assert device.authentication.symmetric_key.secondary_key == secondary
    assert device.connection_state == "Disconnected" and device.etag

    thumbs = ("A1" * 32, "B2" * 32)
    x509 = rm.create_device_with_x509("sdk-x509", *thumbs, "enabled")
    assert x509.authentication.type == "selfSigned"
    assert x509.authentication.x509_thumbprint.primary_thumbprint == thumbs[0]
    assert x509.authentication.x509_thumbprint.secondary_thumbprint == thumbs[1]

    by_ca = rm.create_device_with_certificate_authority("sdk-ca", "enabled")
    assert by_ca.authentication.type == "certificateAuthority"

    got = rm.get_device("sdk-sas")
    assert got.etag == device.etag
    disabled = rm.update_device_with_sas("sdk-sas", got.etag, primary, secondary, "disabled")
    assert disabled.status == "disabled" and disabled.etag != got.etag
    stale = lambda: rm.update_device_with_sas("sdk-sas", got.etag, primary, secondary, "enabled")  # noqa: E731
    assert status_of(stale) == 412
    assert {"sdk-sas", "sdk-x509"} <= {d.device_id for d in rm.get_devices(1000)}
    stats = rm.get_device_registry_statistics()
    assert stats.total_device_count >= 2 and stats.disabled_device_count >= 1
    assert rm.get_service_statistics().connected_device_count >= 0

    rm.delete_device("sdk-x509", x509.etag)
    assert status_of(lambda: rm.get_device("sdk-x509")) == 404
    assert status_of(lambda: rm.create_device_with_sas("sdk-sas", None, None, "enabled")) == 409


def test_module_identities(live: Live) -> None:
    rm = live.registry()
    rm.create_device_with_sas("sdk-mod", None, None, "enabled")
    key = new_key()
    module = rm.create_module_with_sas("sdk-mod", "filter", "", key, new_key())
    assert module.module_id == "filter" and module.device_id == "sdk-mod"
    assert module.authentication.symmetric_key.primary_key == key
    assert rm.get_module("sdk-mod", "filter").etag == module.etag
    assert [m.module_id for m in rm.get_modules("sdk-mod")] == ["filter"]
    updated = rm.update_module_with_sas("sdk-mod", "filter", "ops", module.etag, new_key(), key)
    assert updated.managed_by == "ops"
    assert updated.authentication.symmetric_key.secondary_key == key
    rm.delete_module("sdk-mod", "filter")
    assert rm.get_modules("sdk-mod") == []


def test_twins_with_etags(live: Live) -> None:
    rm = live.registry()
    rm.create_device_with_sas("sdk-twin", None, None, "enabled")
    twin = rm.get_twin("sdk-twin")
    assert twin.device_id == "sdk-twin" and twin.etag

    patch = Twin(tags={"site": "a"}, properties=TwinProperties(desired={"fps": 5}))
    patched = rm.update_twin("sdk-twin", patch, twin.etag)
    assert patched.tags == {"site": "a"}
    assert patched.properties.desired["fps"] == 5 and patched.etag != twin.etag
    assert status_of(lambda: rm.update_twin("sdk-twin", Twin(tags={"x": 1}), twin.etag)) == 412

    replaced = rm.replace_twin("sdk-twin", Twin(tags={"only": 1}), patched.etag)
    assert replaced.tags == {"only": 1}
    assert status_of(lambda: rm.replace_twin("sdk-twin", Twin(tags={}), patched.etag)) == 412

    rm.create_module_with_sas("sdk-twin", "cam", "", None, None)
    desired = Twin(properties=TwinProperties(desired={"rate": 2}))
    module_twin = rm.update_module_twin("sdk-twin", "cam", desired)
    assert module_twin.module_id == "cam" and module_twin.properties.desired["rate"] == 2
    assert rm.get_module_twin("sdk-twin", "cam").etag == module_twin.etag
    swapped = rm.replace_module_twin("sdk-twin", "cam", Twin(tags={"m": 1}), module_twin.etag)
    assert swapped.tags == {"m": 1} and "rate" not in swapped.properties.desired


def test_query_pages_with_continuation_tokens(live: Live) -> None:
    rm = live.registry()
    for n in range(5):
        rm.create_device_with_sas(f"sdk-q{n}", None, None, "enabled")
        rm.update_twin(f"sdk-q{n}", Twin(tags={"batch": "q"}))

    def pages(text: str) -> list[Any]:
        spec = QuerySpecification(query=text)
        results = [rm.query_iot_hub(spec, None, 2)]
        while results[-1].continuation_token:
            results.append(rm.query_iot_hub(spec, results[-1].continuation_token, 2))
        return results

    twins = pages("SELECT * FROM devices WHERE tags.batch = 'q'")
    assert [len(page.items) for page in twins] == [2, 2, 1]
    assert {t.device_id for page in twins for t in page.items} == {f"sdk-q{n}" for n in range(5)}
    assert {page.type for page in twins} == {"Twin"}

    raw = pages("SELECT deviceId FROM devices WHERE tags.batch = 'q' AND deviceId != 'sdk-q0'")
    # a full page carries a continuation token: the last one may come back empty
    assert [len(page.items) for page in raw][:2] == [2, 2] and len(raw) <= 3
    # (the SDK reads every row as a Twin: a projection fills the fields it names)
    assert {row.device_id for page in raw for row in page.items} == {
        f"sdk-q{n}" for n in range(1, 5)
    }
    assert {page.type for page in raw} == {"Raw"}


def test_direct_methods_of_devices_and_modules(live: Live, tmp_path: Path) -> None:
    rm = live.registry()
    rm.create_device_with_sas("sdk-meth", None, None, "enabled")
    rm.create_module_with_sas("sdk-meth", "filter", "", None, None)
    client = device_client(live.hub, "sdk-meth", tmp_path)

    def answer(request: MethodRequest) -> MethodResponse:
        body = {"echo": request.payload, "module": request.module_id}
        return MethodResponse.create_from_method_request(request, 201, body)

    client.on_method_request_received = answer
    module = client.module("filter")
    module.on_method_request_received = answer
    client.connect(20)
    try:
        assert wait_until(lambda: rm.get_device("sdk-meth").connection_state == "Connected")
        service = live.registry("service")
        call = CloudToDeviceMethod(
            method_name="echo", payload={"a": [1, 2]}, response_timeout_in_seconds=10
        )
        result = service.invoke_device_method("sdk-meth", call)
        assert (result.status, result.payload) == (201, {"echo": {"a": [1, 2]}, "module": None})
        result = service.invoke_device_module_method("sdk-meth", "filter", call)
        assert result.payload == {"echo": {"a": [1, 2]}, "module": "filter"}
    finally:
        client.shutdown()
    assert wait_until(lambda: rm.get_device("sdk-meth").connection_state == "Disconnected")
    offline = CloudToDeviceMethod(method_name="echo", connect_timeout_in_seconds=0)
    assert status_of(lambda: rm.invoke_device_method("sdk-meth", offline)) == 404


EDGE_CONTENT = {
    "$edgeAgent": {
        "properties.desired": {
            "schemaVersion": "1.1",
            "runtime": {"type": "docker", "settings": {}},
            "systemModules": {
                "edgeAgent": {"type": "docker", "settings": {"image": "agent:1"}},
                "edgeHub": {
                    "type": "docker",
                    "status": "running",
                    "restartPolicy": "always",
                    "settings": {"image": "hub:1"},
                },
            },
            "modules": {},
        }
    },
    "$edgeHub": {
        "properties.desired": {
            "schemaVersion": "1.1",
            "routes": {"up": "FROM /messages/* INTO $upstream"},
            "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
        }
    },
}


def test_configurations_and_apply_on_an_edge_device(live: Live) -> None:
    cm = live.configurations()
    config = Configuration(
        id="sdk-cfg",
        content=ConfigurationContent(device_content={"properties.desired.fps": 10}),
        target_condition="tags.site = 'a'",
        priority=2,
        labels={"team": "sdk"},
    )
    created = cm.create_configuration(config)
    assert created.id == "sdk-cfg" and created.etag and created.priority == 2
    got = cm.get_configuration("sdk-cfg")
    assert got.target_condition == "tags.site = 'a'" and got.labels == {"team": "sdk"}
    assert got.content.device_content == {"properties.desired.fps": 10}
    cm.create_configuration(Configuration(id="sdk-cfg2", content=config.content, priority=1))
    listed = cm.get_configurations(1)
    assert len(listed) == 1
    assert {"sdk-cfg", "sdk-cfg2"} <= {c.id for c in cm.get_configurations(100)}

    got.priority = 7
    updated = cm.update_configuration(got, got.etag)
    assert updated.priority == 7 and updated.etag != got.etag
    assert status_of(lambda: cm.update_configuration(got, got.etag)) == 412
    cm.delete_configuration("sdk-cfg")
    checked = cm.test_configuration_queries(
        ConfigurationQueriesTestInput(
            target_condition="tags.site = 'a", custom_metric_queries={"ok": "SELEC deviceId"}
        )
    )
    assert "unterminated string" in checked.target_condition_error
    assert "expected SELECT" in checked.custom_metric_query_errors["ok"]
    assert status_of(lambda: cm.get_configuration("sdk-cfg")) == 404

    rm = live.registry()
    edge = ExportImportDevice(
        id="sdk-edge",
        import_mode="create",
        status="enabled",
        authentication=AuthenticationMechanism(type="sas"),
        capabilities=DeviceCapabilities(iot_edge=True),
    )
    assert rm.bulk_create_or_update_devices([edge]).is_successful
    applied = cm.apply_configuration_on_edge_device(
        "sdk-edge", ConfigurationContent(modules_content=EDGE_CONTENT)
    )
    assert applied is None  # the SDK accepts exactly 204
    routes = rm.get_module_twin("sdk-edge", "$edgeHub").properties.desired["routes"]
    assert routes == {"up": "FROM /messages/* INTO $upstream"}


def test_refused_signatures_answer_401_as_iot_hub_does(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refusal(call: Callable[[], Any]) -> str:
        with pytest.raises(HttpOperationError) as raised:
            call()
        assert str(raised.value) == "Operation returned an invalid status code 'Unauthorized'"
        response = raised.value.response
        assert response.status_code == 401
        assert response.headers["iothub-errorcode"] == "IotHubUnauthorizedAccess"
        body = response.json()
        assert body["Message"] == "ErrorCode:IotHubUnauthorizedAccess;Unauthorized"
        reason: str = body["ExceptionMessage"]
        return reason

    assert "match" in refusal(lambda: live.registry(key=new_key()).get_devices())
    owner_key = live.policies["iothubowner"]["primaryKey"]
    unknown = IoTHubRegistryManager.from_connection_string(
        live.connection_string("iothubowner", owner_key).replace("=iothubowner;", "=nobody;")
    )
    assert "nobody" in refusal(lambda: unknown.get_devices())
    # permissions: registryRead reads only; service changes twins but no identity;
    # registryReadWrite changes identities but deploys nothing
    reader = live.registry("registryRead")
    assert "permission" in refusal(
        lambda: reader.create_device_with_sas("x", None, None, "enabled")
    )
    service = live.registry("service")
    assert "permission" in refusal(
        lambda: service.create_device_with_sas("x", None, None, "enabled")
    )
    service.update_twin("sdk-sas", Twin(tags={"by": "service"}))
    writer = live.registry("registryReadWrite")
    writer.create_device_with_sas("sdk-by-writer", None, None, "enabled")
    deployer = IoTHubConfigurationManager.from_connection_string(
        live.connection_string("registryReadWrite")
    )
    refusal(lambda: deployer.create_configuration(Configuration(id="no", priority=1)))

    # an expired token: the SDK's own SasToken, made with a negative time to live
    import azure.iot.hub.auth as sdk_auth

    real = sdk_auth.SasToken
    monkeypatch.setattr(sdk_auth, "SasToken", lambda *a: real(*a, ttl=-60))
    assert "expired" in refusal(lambda: live.registry().get_devices())


def test_policies_created_and_rotated_with_the_cli(live: Live) -> None:
    created = json.loads(
        cli(live.hub, "hub", "policy", "create", "sdk-ops", "--permissions", "RegistryRead")
    )
    assert created["permissions"] == ["registry:read"]
    ops = live.registry("sdk-ops", created["primaryKey"])
    assert isinstance(ops.get_devices(), list)  # a new policy works at once
    assert status_of(lambda: ops.create_device_with_sas("x", None, None, "enabled")) == 401

    rotated = json.loads(cli(live.hub, "hub", "policy", "rotate", "sdk-ops"))
    assert rotated["secondaryKey"] == created["secondaryKey"]
    fresh = live.registry("sdk-ops", rotated["primaryKey"])
    assert isinstance(fresh.get_devices(), list)  # a new key works at once

    def old_key_refused() -> bool:
        try:
            ops.get_devices()
        except HttpOperationError as exc:
            return bool(exc.response.status_code == 401)
        return False

    assert wait_until(old_key_refused)  # running hubs drop a rotated key within seconds
