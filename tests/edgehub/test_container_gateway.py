"""Container modules on a bridge network reach the edge hub at their network's gateway address:
which network a container joins and its gateway (decisions), the agent's setting, and the edge
hub listening at such an address (a loopback address stands in for a bridge's here)."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from composition.processes import free_loopback
from edge_agent.config import AgentConfig
from edge_agent.edgehub.hub import EdgeHub, EdgeHubConfig
from edge_agent.runtime.container_network import gateway_for, gateway_of, network_of
from edgefleet.sdk.module_client import Message, ModuleClient


def test_the_network_a_container_joins() -> None:
    assert network_of({}) == "bridge"  # docker's default
    assert network_of({"HostConfig": {"Binds": ["/a:/b"]}}) == "bridge"
    assert network_of({"HostConfig": {"NetworkMode": "default"}}) == "bridge"
    assert network_of({"HostConfig": {"NetworkMode": "azure-iot-edge"}}) == "azure-iot-edge"
    endpoints: dict[str, Any] = {"NetworkingConfig": {"EndpointsConfig": {"edge-net": {}}}}
    assert network_of(endpoints) == "edge-net"
    assert network_of({**endpoints, "HostConfig": {"NetworkMode": "other"}}) == "other"
    for shared in ("host", "none", "container:abc123"):
        assert network_of({"HostConfig": {"NetworkMode": shared}}) is None


def test_the_gateway_of_a_docker_network() -> None:
    def net(*configs: dict[str, Any]) -> dict[str, Any]:
        return {"IPAM": {"Driver": "default", "Config": list(configs)}}

    assert gateway_of(net({"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"})) == "172.17.0.1"
    assert gateway_of(net({"Subnet": "172.20.0.0/16"})) == "172.20.0.1"  # docker's own choice
    v6 = {"Subnet": "fd00::/64", "Gateway": "fd00::1"}
    assert gateway_of(net(v6, {"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.254"})) == "10.9.0.254"
    assert gateway_of(net(v6)) is None
    assert gateway_of({"IPAM": {"Config": None}}) is None  # the host and null networks
    assert gateway_of({}) is None
    assert gateway_of(net({"Subnet": "bogus"})) is None


def test_where_a_container_is_told_the_edge_hub_is() -> None:
    lookup = {"bridge": "172.17.0.1", "edge": "172.30.0.1"}.get
    on_edge = {"HostConfig": {"NetworkMode": "edge"}}
    assert gateway_for({}, "auto", lookup) == "172.17.0.1"
    assert gateway_for(on_edge, "auto", lookup) == "172.30.0.1"
    assert gateway_for({"HostConfig": {"NetworkMode": "missing"}}, "auto", lookup) is None
    assert gateway_for(on_edge, "10.0.0.5", lookup) == "10.0.0.5"
    assert gateway_for(on_edge, None, lookup) is None
    assert gateway_for({"HostConfig": {"NetworkMode": "host"}}, "10.0.0.5", lookup) is None


def test_the_container_gateway_setting() -> None:
    provisioning = {"source": "local", "manifest": "deployment.json"}

    def config(**value: Any) -> AgentConfig:
        return AgentConfig.model_validate({"provisioning": provisioning, **value})

    assert config().edge_hub_container_gateway_host == "auto"
    address = config(edge_hub_container_gateway_host="172.18.0.1")
    assert address.edge_hub_container_gateway_host == "172.18.0.1"
    assert config(edge_hub_container_gateway_host=None).edge_hub_container_gateway_host is None
    for bad, why in (("0.0.0.0", "wildcard"), ("gateway.local", "IP address")):
        with pytest.raises(ValidationError, match=why) as info:
            config(edge_hub_container_gateway_host=bad)
        assert info.value.errors()[0]["loc"] == ("edge_hub_container_gateway_host",)


def test_the_edge_hub_listens_where_a_container_module_reaches_it(tmp_path: Path) -> None:
    own = free_loopback(0)  # the TLS listener of process modules
    bridge = free_loopback(0)  # stands in for a bridge's gateway address
    config = EdgeHubConfig(
        "dev", tmp_path / "edgehub", iothub_host=own, iothub_port=0, https_port=0
    )
    hub = EdgeHub(config, upstream=None)
    route = 'FROM /messages/modules/c/* INTO BrokeredEndpoint("/modules/p/inputs/i")'
    hub.apply_desired({"routes": {"r": route}})
    hub.start()
    clients: list[ModuleClient] = []
    try:
        env_p = hub.module_env("p")
        env_c = hub.module_env("c", gateway_address=bridge)
        assert (
            env_p["IOTEDGE_GATEWAYHOSTNAME"] == own and env_p["IOTEDGE_EDGEHUBHOST"] == "127.0.0.1"
        )
        assert env_c["IOTEDGE_GATEWAYHOSTNAME"] == env_c["IOTEDGE_EDGEHUBHOST"] == bridge
        assert f"GatewayHostName={bridge};" in env_c["EdgeHubConnectionString"]
        assert env_c["IOTEDGE_WORKLOADURI"].endswith("/run/modules/c/workload.sock")
        assert hub.module_env("c", gateway_address=bridge) == env_c  # the same every time

        # the native listener there: c's output reaches p
        p = ModuleClient.create_from_environment(env_p)
        c = ModuleClient.create_from_environment(env_c)
        clients += [p, c]
        got = threading.Event()
        p.on_message_received = lambda _m: got.set()
        p.connect(timeout=30)
        c.connect(timeout=30)
        c.send_message_to_output(Message(b"hi"), "o")
        assert got.wait(30)

        # the TLS and HTTPS listeners there, with a certificate of the edge CA naming it
        ports = hub.container_gateways.ports(bridge)
        assert ports.iothub and ports.https
        trust = ssl.create_default_context(cadata=hub.trust_bundle())
        for port in (ports.iothub, ports.https):
            with socket.create_connection((bridge, port), timeout=10) as raw:
                with trust.wrap_socket(raw, server_hostname=bridge) as tls:
                    assert tls.version() in ("TLSv1.2", "TLSv1.3")

        # an address this host does not have: nothing listens, the module is still told it
        nowhere = hub.module_env("d", gateway_address="192.0.2.7")
        assert nowhere["IOTEDGE_GATEWAYHOSTNAME"] == "192.0.2.7"
        assert not hub.container_gateways.ports("192.0.2.7").any
    finally:
        for client in clients:
            client.shutdown()
        hub.stop()
    with pytest.raises(OSError):  # the hub's listeners at the container address are closed
        socket.create_connection((bridge, int(env_c["IOTEDGE_EDGEHUBPORT"])), timeout=5).close()
