"""Sends hostile MQTT cases to a broker as an authenticated device, one connection per case, and
reads what the broker does with each: keeps the connection (it answers a PINGREQ sent after the
case), closes it, or goes silent (a frame that claims more bytes than were sent leaves the broker
waiting, as MQTT says it should)."""

from __future__ import annotations

import socket
import ssl
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from composition.hostile.inputs import PINGREQ, MqttCase, connect_packet
from edgefleet import mqtt_packets as mp

KEPT, CLOSED, SILENT, REFUSED = "kept", "closed", "silent", "connect refused"
CLOSE_WAIT_SECONDS = 1.5  # how long a connection that answered must stay open to count as kept


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom a device connects: the hub's ``mqttCredentials`` of it."""

    host: str
    port: int
    client_id: str
    username: str | None
    password: str | None
    ca_file: str | None
    tls: bool

    @classmethod
    def from_credentials(cls, creds: dict[str, Any]) -> Endpoint:
        return cls(
            creds["host"],
            int(creds["port"]),
            creds["client_id"],
            creds.get("username"),
            creds.get("password"),
            creds.get("ca_file"),
            bool(creds.get("tls")),
        )

    def open(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout)
        if not self.tls:
            return sock
        context = ssl.create_default_context(cafile=self.ca_file)
        return context.wrap_socket(sock, server_hostname=self.host)


def _frames(data: bytes) -> list[int]:
    """The packet types of the whole frames at the start of ``data``."""
    try:
        packets, _ = mp.split_packets(data)
    except mp.ProtocolViolation:
        return []
    return [ptype for ptype, _, _ in packets]


def _read_until(sock: socket.socket, want: int, deadline: float) -> tuple[bytes, bool]:
    """Read until a frame of type ``want`` arrives; (bytes read, whether the peer closed)."""
    data = b""
    while want not in _frames(data):
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        except OSError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def send_case(endpoint: Endpoint, case: MqttCase, timeout: float = 1.0) -> str:
    """One connection: CONNECT, the case's bytes, a PINGREQ; what became of it."""
    deadline = time.monotonic() + timeout
    connect = connect_packet(endpoint.client_id, endpoint.username, endpoint.password)
    with endpoint.open(timeout) as sock:
        sock.sendall(connect)
        data, closed = _read_until(sock, 2, deadline)
        if closed or len(data) < 4 or data[3] != 0:
            return REFUSED
        try:
            sock.sendall(case.packets + PINGREQ)
        except OSError:
            return CLOSED
        data, closed = _read_until(sock, 13, deadline)
        if 13 not in _frames(data):
            return CLOSED if closed else SILENT
        # a server closing the connection may still answer a PINGREQ it had already read
        _, closed = _read_until(sock, -1, time.monotonic() + CLOSE_WAIT_SECONDS)
        return CLOSED if closed else KEPT


def attack(
    plan: list[tuple[Endpoint, list[MqttCase]]], timeout: float = 1.0
) -> dict[str, Counter[str]]:
    """Each endpoint (a device identity) sends its cases one connection at a time (a second
    connection of the same client id would take the first over), the endpoints side by side;
    per case kind, how many ended which way."""

    def run(step: tuple[Endpoint, list[MqttCase]]) -> list[str]:
        endpoint, cases = step
        outcomes = []
        for case in cases:
            try:
                outcomes.append(send_case(endpoint, case, timeout))
            except OSError:  # ssl.SSLError included
                outcomes.append(CLOSED)
        return outcomes

    outcomes: dict[str, Counter[str]] = {}
    with ThreadPoolExecutor(max(1, len(plan))) as pool:
        for (_, cases), results in zip(plan, pool.map(run, plan), strict=True):
            for case, outcome in zip(cases, results, strict=True):
                outcomes.setdefault(case.kind, Counter())[outcome] += 1
    return outcomes
