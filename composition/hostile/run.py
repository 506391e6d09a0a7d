"""One hostile run against a hub of each broker mode: start the hub (and, for ``external``, a
mosquitto of the run's own), create an attacker, a victim and a well-behaved device, send the
cases, then judge what an operator would: the hub is alive and answers, a well-behaved device's
message after the attack is stored, the victim received nothing of the attacker, and the hub's
processes hold no more sockets than before (leaks)."""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from composition.bench.rollout import RunningHub, serve_hub
from composition.hostile import inputs
from composition.hostile.mqtt_attack import Endpoint, attack
from edgefleet import protocol

BROKER_MODES = ("embedded", "mosquitto", "external")
ATTACKERS = 8  # devices sending cases side by side, one connection each at a time
MAX_BYTES = protocol.MAX_MESSAGE_BYTES


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def open_sockets(pids: list[int]) -> int:
    """How many sockets the processes hold open."""
    count = 0
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
            except OSError:
                continue
    return count


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


@contextmanager
def _hub(mode: str, stack: ExitStack, workdir: Path) -> Iterator[RunningHub]:
    broker = mode
    if mode == "external":
        from composition.bench.ingest_workers import plain_mosquitto

        port = stack.enter_context(plain_mosquitto(workdir))
        broker = f"mqtt://127.0.0.1:{port}"
    with serve_hub(None, broker) as hub:
        yield hub


def _stored(api: httpx.Client, device: str) -> list[str]:
    body = api.get(f"/devices/{device}/messages", params={"limit": 1000}).json()
    return [m.get("messageId") for m in body.get("messages", [])]


def _settled_sockets(pids: list[int], baseline: int, seconds: float = 15.0) -> int:
    """Sockets held once the attack's connections are gone (waits up to ``seconds``)."""
    deadline = time.monotonic() + seconds
    while True:
        now = open_sockets(pids)
        if now <= baseline or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def _send_one(creds: dict[str, Any], workdir: Path) -> str:
    from edgefleet.sdk.device_client import DeviceClient

    client = DeviceClient.create_from_credentials(creds, outbox_path=workdir / "good.db")
    client.connect(30)
    try:
        message_id = client.send_message({"after": "attack"})
        if not client.wait_for_outbox_empty(30):
            raise RuntimeError("the good device's message was not acknowledged")
        return message_id
    finally:
        client.shutdown()


def run_mode(mode: str, count: int, seed: int) -> dict[str, Any]:
    """Start a hub of broker ``mode`` and attack it; the counts and verdict as one JSON object."""
    with tempfile.TemporaryDirectory(prefix="edgefleet-hostile-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        hub = stack.enter_context(_hub(mode, stack, workdir))
        return attack_hub(hub.api, hub.pid, mode, count, seed, workdir)


def attack_hub(
    api: httpx.Client, pid: int, mode: str, count: int, seed: int, workdir: Path
) -> dict[str, Any]:
    """Attack the running hub (process ``pid``, its REST API ``api``, broker ``mode``) with
    ``count`` cases shared out among devices ``hostile-attacker-N`` it creates (side by side),
    then checks with ``hostile-good`` and ``hostile-victim``."""
    attackers = [f"hostile-attacker-{i}" for i in range(ATTACKERS)]
    victim_id, good_id = "hostile-victim", "hostile-good"
    for device in (*attackers, victim_id, good_id):
        api.put(f"/devices/{device}", json={"deviceId": device}).raise_for_status()
    plan = []
    for i, attacker in enumerate(attackers):
        creds = api.get(f"/devices/{attacker}/mqttCredentials").json()
        # the same cases whoever sends them, each naming its sender's own topics
        cases = inputs.mqtt_cases(attacker, victim_id, count, seed, MAX_BYTES)[i::ATTACKERS]
        plan.append((Endpoint.from_credentials(creds), cases))
    good_creds = api.get(f"/devices/{good_id}/mqttCredentials").json()
    warmup = inputs.mqtt_cases(attackers[0], victim_id, 3, seed, MAX_BYTES)
    attack([(plan[0][0], warmup)])  # the first connections warm the broker's and hub's pools
    pids = process_tree(pid)
    sockets_before, rss_before = open_sockets(pids), _rss_mib(pids)
    started = time.monotonic()
    outcomes = attack(plan)
    seconds = time.monotonic() - started
    alive = _alive(pid) and api.get("/health").status_code == 200
    message_id = _send_one(good_creds, workdir) if alive else ""
    deadline = time.monotonic() + 30
    while alive and message_id not in _stored(api, good_id) and time.monotonic() < deadline:
        time.sleep(0.3)
    good_stored = alive and message_id in _stored(api, good_id)
    victim_messages = len(_stored(api, victim_id)) if alive else 0
    sockets_after = _settled_sockets(pids, sockets_before)
    totals: Counter[str] = Counter()
    for counter in outcomes.values():
        totals.update(counter)
    leaks = max(0, sockets_after - sockets_before)
    crashes = 0 if alive else 1
    # an external broker's own ACLs decide who may publish to which device's topics
    isolated = victim_messages == 0 or mode == "external"
    return {
        "target": f"hub MQTT ({mode} broker)",
        "broker": mode,
        "inputs": sum(len(cases) for _, cases in plan),
        "crashes": crashes,
        "leaks": leaks,
        "outcomes": dict(totals),
        "perKind": {kind: dict(counter) for kind, counter in sorted(outcomes.items())},
        "victimMessages": victim_messages,
        "goodMessageStored": good_stored,
        "socketsBefore": sockets_before,
        "socketsAfter": sockets_after,
        "rssMiB": [rss_before, _rss_mib(pids)],
        "seconds": round(seconds, 1),
        "passed": crashes == 0 and leaks == 0 and good_stored and isolated,
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
