"""Simulated edge agents for ``edgefleet bench rollout``: many devices in one process.

Each agent is one paho client speaking the device side of the MQTT contract as the real agent
does (``edge_agent/hub_twin_channel.py``): it connects with its device credentials, subscribes to
its ``$edgeAgent`` module twin's desired pushes and responses, reads the module twin on connect and
on every push, and reports ``lastDesiredVersion``, ``lastDesiredStatus`` and the modules' runtime
status for each new desired version that carries a deployment.

The clients share a few threads: each thread drives its clients with one ``selectors`` loop
(paho's external-loop API: ``loop_read``/``loop_write``/``loop_misc``), so a thousand connections
cost a few threads instead of a thousand.
"""

from __future__ import annotations

import hashlib
import json
import selectors
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgefleet import protocol as p

AGENT = "$edgeAgent"
MISC_EVERY_S = 1.0


def failing_devices(device_ids: Iterable[str], fraction: float) -> set[str]:
    """The ``round(n * fraction)`` devices whose SHA-256 of the id sorts first (same every run)."""
    ids = sorted(device_ids, key=lambda d: hashlib.sha256(d.encode()).hexdigest())
    return set(ids[: round(len(ids) * fraction)])


def reported_patch(desired: dict[str, Any], failing: bool) -> dict[str, Any]:
    """What an agent reports after applying ``desired``: every module running, or, on a failing
    device, status 400 with the first module in backoff."""
    names = sorted(desired.get("modules") or {})
    modules: dict[str, Any] = {
        name: {"runtimeStatus": "running", "exitCode": 0, "restartCount": 0} for name in names
    }
    if failing and names:
        modules[names[0]] = {"runtimeStatus": "backoff", "exitCode": 1, "restartCount": 3}
    status = {"code": 400, "description": "module failed to start"} if failing else {"code": 200}
    return {
        "schemaVersion": "1.1",
        "lastDesiredVersion": desired["$version"],
        "lastDesiredStatus": status,
        "systemModules": {
            "edgeAgent": {"runtimeStatus": "running"},
            "edgeHub": {"runtimeStatus": "running"},
        },
        "modules": modules,
    }


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    ca_file: str | None


@dataclass
class _Agent:
    device_id: str
    password: str
    failing: bool
    client: mqtt.Client | None = None
    ready: bool = False  # connected, subscribed and the first twin read answered
    reported_version: int = 0
    acked_version: int = 0
    gets: set[str] = field(default_factory=set)
    next_rid: int = 0
    refused: bool = False  # the broker refused it (credentials not synced yet): connect again

    def rid(self) -> str:
        self.next_rid += 1
        return str(self.next_rid)


class _Loop(threading.Thread):
    """One thread: connects its agents, then runs their network I/O until stopped."""

    def __init__(self, fleet: SimulatedFleet, agents: list[_Agent]) -> None:
        super().__init__(name="sim-agents", daemon=True)
        self.fleet = fleet
        self.agents = agents
        self.selector = selectors.DefaultSelector()

    def _client(self, agent: _Agent) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=agent.device_id, userdata=agent)
        c.username_pw_set(p.mqtt_username(agent.device_id), agent.password)
        if self.fleet.tls is not None:
            c.tls_set_context(self.fleet.tls)
        c.on_socket_open = lambda _c, _u, sock: self._watch(sock, _c)
        c.on_socket_close = lambda _c, _u, sock: self._forget(sock)
        c.on_socket_register_write = lambda _c, _u, sock: self._want(sock, _c, True)
        c.on_socket_unregister_write = lambda _c, _u, sock: self._want(sock, _c, False)
        c.on_connect = self.fleet.on_connect
        c.on_subscribe = self.fleet.on_subscribe
        c.on_message = self.fleet.on_message
        return c

    def _watch(self, sock: Any, client: mqtt.Client) -> None:
        self.selector.register(sock, selectors.EVENT_READ, client)

    def _forget(self, sock: Any) -> None:
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _want(self, sock: Any, client: mqtt.Client, write: bool) -> None:
        mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        try:
            self.selector.modify(sock, mask, client)
        except (KeyError, ValueError):
            pass

    def run(self) -> None:
        for agent in self.agents:
            if self.fleet.stopping.is_set():
                return
            self._connect(agent)
        last_misc = time.monotonic()
        while not self.fleet.stopping.is_set():
            for key, mask in self.selector.select(timeout=0.2):
                client: mqtt.Client = key.data
                if mask & selectors.EVENT_READ:
                    self._read(client, key.fileobj)
                if mask & selectors.EVENT_WRITE:
                    client.loop_write()
            now = time.monotonic()
            if now - last_misc >= MISC_EVERY_S:
                last_misc = now
                for agent in self.agents:
                    if agent.refused:  # a managed broker learns new credentials a moment later
                        self._connect(agent)
                    elif agent.client is not None:
                        agent.client.loop_misc()
        for agent in self.agents:
            if agent.client is not None:
                agent.client.disconnect()
                agent.client.loop_write()

    def _connect(self, agent: _Agent) -> None:
        ep = self.fleet.endpoint
        agent.refused = False
        agent.client = self._client(agent)
        try:
            agent.client.connect(ep.host, ep.port, keepalive=120)
        except OSError as exc:
            self.fleet.errors.append(f"{agent.device_id}: {exc}")

    @staticmethod
    def _read(client: mqtt.Client, sock: Any) -> None:
        """Read until the TLS layer holds no buffered bytes (the selector cannot see them)."""
        while True:
            if client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                return
            pending = getattr(sock, "pending", None)
            if pending is None or not pending():
                return


class SimulatedFleet:
    """``devices`` maps device ids to MQTT passwords; ``failing`` devices report failure."""

    def __init__(
        self,
        endpoint: Endpoint,
        devices: dict[str, str],
        failing: set[str],
        threads: int = 4,
    ) -> None:
        self.endpoint = endpoint
        self.tls: ssl.SSLContext | None = None
        if endpoint.ca_file is not None:
            self.tls = ssl.create_default_context(cafile=endpoint.ca_file)
            self.tls.check_hostname = False
        self.agents = [_Agent(d, pw, d in failing) for d, pw in sorted(devices.items())]
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.reported_at: dict[str, float] = {}  # device -> when its newest report was acked
        groups = [self.agents[i::threads] for i in range(threads) if self.agents[i::threads]]
        self._loops = [_Loop(self, group) for group in groups]

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for loop in self._loops:
            loop.start()

    def stop(self) -> None:
        self.stopping.set()
        for loop in self._loops:
            loop.join(timeout=10)

    def wait_ready(self, timeout: float) -> int:
        """Wait until every agent has read its twin once; returns how many have."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = self.ready_count()
            if ready == len(self.agents):
                return ready
            time.sleep(0.1)
        return self.ready_count()

    def ready_count(self) -> int:
        return sum(1 for a in self.agents if a.ready)

    def acked(self) -> int:
        """Agents whose report of a deployment the hub has accepted."""
        return sum(1 for a in self.agents if a.acked_version > 0)

    # ------------------------------------------------------------------ paho callbacks
    def on_connect(self, c: mqtt.Client, agent: _Agent, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self.errors.append(f"{agent.device_id}: connect refused ({rc})")
            agent.refused = True
            c.disconnect()
            return
        prefix = f"{p.ROOT}/{agent.device_id}/modules/{AGENT}/twin"
        c.subscribe([(f"{prefix}/desired/#", 1), (f"{prefix}/res/#", 1)])

    def on_subscribe(self, c: mqtt.Client, agent: _Agent, *_rest: Any) -> None:
        self._get_twin(c, agent)

    def _get_twin(self, c: mqtt.Client, agent: _Agent) -> None:
        rid = agent.rid()
        agent.gets.add(rid)
        c.publish(p.twin_get_topic(agent.device_id, rid, AGENT), b"", qos=1)

    def on_message(self, c: mqtt.Client, agent: _Agent, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = p.parse_topic(msg.topic)
        except p.ProtocolError:
            return
        if topic.kind is p.Kind.TWIN_DESIRED:
            self._get_twin(c, agent)  # as the real agent: a push means "read the whole twin"
        elif topic.kind is p.Kind.TWIN_RESPONSE and topic.rid in agent.gets:
            agent.gets.discard(topic.rid)
            if topic.status == 200:
                self._on_twin(c, agent, json.loads(msg.payload))
        elif topic.kind is p.Kind.TWIN_RESPONSE and topic.status == 204:
            agent.acked_version = max(agent.acked_version, agent.reported_version)
            with self._lock:
                self.reported_at[agent.device_id] = time.monotonic()

    def _on_twin(self, c: mqtt.Client, agent: _Agent, twin: dict[str, Any]) -> None:
        desired = twin.get("desired") or {}
        version = int(desired.get("$version", 0))
        agent.ready = True
        if version <= agent.reported_version or "systemModules" not in desired:
            return
        agent.reported_version = version
        patch = reported_patch(desired, agent.failing)
        c.publish(
            p.twin_reported_topic(agent.device_id, agent.rid(), AGENT),
            json.dumps(patch).encode(),
            qos=1,
        )
