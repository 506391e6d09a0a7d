"""The edge hub's listeners at the address containers reach the host at (the gateway of their
docker network, e.g. docker0's 172.17.0.1), opened the first time a container module on that
network gets its environment: the native listener, the TLS listener in IoT Hub's module dialect
and the HTTPS listener for module-to-module methods.

An address where nothing could listen (a network not there yet) is tried again at the next
request, and logged once; an address where something listens is kept until the hub stops.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("edgefleet.edgehub")


@dataclass(frozen=True)
class GatewayPorts:
    """The ports listening at one address (0: that listener is not there)."""

    native: int = 0
    iothub: int = 0
    https: int = 0

    @property
    def any(self) -> bool:
        return bool(self.native or self.iothub or self.https)


class ContainerGateways:
    """``open_at(address)`` opens the listeners at an address; this class asks it once per
    address (again while nothing listens there)."""

    def __init__(self, open_at: Callable[[str], GatewayPorts]) -> None:
        self._open_at = open_at
        self._lock = threading.Lock()
        self._open: dict[str, GatewayPorts] = {}
        self._warned: set[str] = set()

    def ports(self, address: str) -> GatewayPorts:
        with self._lock:
            ports = self._open.get(address)
            if ports is not None:
                return ports
            ports = self._open_at(address)
            if ports.any:
                self._open[address] = ports
                log.info("edge hub: listening for containers at %s (%s)", address, ports)
            elif address not in self._warned:
                self._warned.add(address)
                log.warning(
                    "edge hub: nothing listens at %s; containers on that network cannot reach "
                    "the edge hub (tried again with the next module started there)",
                    address,
                )
            return ports

    def clear(self) -> None:
        """Forget every address (the hub stopped: its listeners are closed)."""
        with self._lock:
            self._open.clear()
