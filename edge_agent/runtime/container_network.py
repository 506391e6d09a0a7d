"""Which docker network a container module joins, and the address it reaches the host at there
(the network's gateway: the bridge's own address on the host), as decisions (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

DEFAULT_NETWORK = "bridge"  # docker's network for a container that names none


def network_of(create_options: Mapping[str, Any]) -> str | None:
    """The network a container made from ``create_options`` (docker's create JSON) joins:
    ``HostConfig.NetworkMode``, else the one network of ``NetworkingConfig.EndpointsConfig``,
    else docker's default bridge. None when it shares the host's network stack (``host``),
    another container's (``container:<id>``) or has none (``none``)."""
    host_config = create_options.get("HostConfig")
    mode = host_config.get("NetworkMode") if isinstance(host_config, Mapping) else None
    if not isinstance(mode, str) or not mode:
        networking = create_options.get("NetworkingConfig")
        endpoints = networking.get("EndpointsConfig") if isinstance(networking, Mapping) else None
        names = list(endpoints) if isinstance(endpoints, Mapping) else []
        mode = names[0] if len(names) == 1 else DEFAULT_NETWORK
    if mode in ("host", "none") or mode.startswith("container:"):
        return None
    return DEFAULT_NETWORK if mode == "default" else mode


def gateway_of(network: Mapping[str, Any]) -> str | None:
    """The IPv4 gateway of a docker network (``docker network inspect`` JSON): its IPAM
    ``Gateway``, else the first host address of its subnet (docker's choice when none is
    given). None for a network without IPv4 (or a host or null driver network)."""
    ipam = network.get("IPAM")
    configs = ipam.get("Config") if isinstance(ipam, Mapping) else None
    for config in configs if isinstance(configs, list) else []:
        if not isinstance(config, Mapping):
            continue
        gateway = config.get("Gateway")
        try:
            if isinstance(gateway, str) and gateway:
                address = ipaddress.ip_address(gateway.split("/")[0])
                if address.version == 4:
                    return str(address)
                continue
            subnet = ipaddress.ip_network(str(config.get("Subnet", "")), strict=False)
        except ValueError:
            continue
        if subnet.version == 4 and subnet.num_addresses > 2:
            return str(subnet.network_address + 1)
    return None


def gateway_for(
    create_options: Mapping[str, Any], setting: str | None, lookup: Callable[[str], str | None]
) -> str | None:
    """The address a container module reaches the edge hub at: None on the host's network (or
    none) or with ``setting`` None; ``setting`` when it is an address; with ``auto`` the gateway
    of the container's network (``lookup``: network name -> address)."""
    network = network_of(create_options)
    if setting is None or network is None:
        return None
    return lookup(network) if setting == "auto" else setting
