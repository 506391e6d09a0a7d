"""``edgefleet bench rollout``: how fast a fleet deployment reaches and is reported by its devices.

1. Rollout: a real ``edgefleet hub serve`` (embedded broker) with ``devices`` edge devices, each
   run by a simulated agent in this process (``composition.bench.sim_agents``). One deployment
   targets them all; the figures are the seconds from its PUT until the configuration's system
   metrics show every device applied and every device reported (successful and failed), plus the
   hub's CPU seconds and memory.
2. Assignment: a fresh hub with ``assign_devices`` edge devices and no agents; the seconds from
   the PUT until ``appliedCount`` covers them all, on SQLite and on PostgreSQL when one is
   reachable (a temporary database, dropped afterwards).

The metrics are counted by the hub at most every ``metrics_interval_secs`` (2 s by default), so
the metric-based figures are late by up to that much; ``agentsAckedS`` is the agents' own clock.
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from composition.bench.sim_agents import Endpoint, SimulatedFleet, failing_devices
from composition.processes import Child, cli, free_port
from edgefleet import protocol as p
from edgefleet.manifest import edge_deployment, process_module

GOALS = {
    "rollout": {"devices": 1000, "seconds": 60.0, "what": "100% reported successful"},
    "assignment": {"devices": 10_000, "seconds": 15.0, "what": "appliedCount == all"},
}
DEFAULT_PG = os.environ.get(
    "EDGEFLEET_TEST_PG", "postgresql://edgefleet:edgefleet@127.0.0.1:5432/edgefleet_test"
)
CONFIG_ID = "bench-rollout"
TARGET = "tags.bench='1'"
IMPORT_BATCH = 1000

Progress = Callable[[str], None]


def bench_content() -> dict[str, Any]:
    """A deployment of two process modules (the agents only report them, nothing runs)."""
    return edge_deployment(
        {name: process_module(f"python -m bench.{name}") for name in ("sensor", "scorer")}
    )


# ---------------------------------------------------------------------- the machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    from modules.accelerators.cpu import cpu_flags, physical_cores

    return {
        "cpuModel": cpu_model(),
        "cpus": os.cpu_count(),
        "physicalCores": physical_cores(),
        "cpuFlags": sorted(cpu_flags()),
    }


def _cpu_s(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _memory_mb(pid: int) -> dict[str, float | None]:
    """Resident memory now and its peak (Linux ``VmHWM``)."""
    import psutil

    rss = psutil.Process(pid).memory_info().rss / 2**20
    peak = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return {"rssMb": round(rss, 1), "peakRssMb": round(peak, 1) if peak is not None else None}


def _wait_idle(pid: int, timeout: float, busy_below: float = 0.15) -> None:
    """Wait until the hub uses under ``busy_below`` of a core over half a second (the worker
    has finished with the devices just created), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = _cpu_s(pid)
        time.sleep(0.5)
        if _cpu_s(pid) - before < busy_below * 0.5:
            return


# ---------------------------------------------------------------------- databases


def pg_reachable(url: str) -> str | None:
    """None when PostgreSQL at ``url`` accepts a connection, else why not."""
    try:
        import psycopg

        with psycopg.connect(_plain(url), connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means "skip PostgreSQL"
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _plain(url: str) -> str:
    """A libpq URL from a SQLAlchemy one."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new database on the server of ``server_url``; yields its SQLAlchemy URL, then drops it."""
    import psycopg

    admin = _plain(server_url)
    name = f"edgefleet_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield base.replace("postgresql://", "postgresql+psycopg://", 1) + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------------- the hub


@dataclass
class RunningHub:
    url: str
    pid: int
    api: httpx.Client


@contextmanager
def serve_hub(database_url: str | None, broker: str = "mosquitto") -> Iterator[RunningHub]:
    """A hub process in a temporary data directory, its broker (``--broker``) on free ports."""
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-rollout-") as tmp:
        data = Path(tmp)
        db = ["--database-url", database_url] if database_url else []
        token_args = cli("hub", "token", "create", "--data-dir", str(data), "--scope", "admin")
        import subprocess

        token = subprocess.run(
            token_args + db, capture_output=True, text=True, check=True, timeout=120
        ).stdout.strip()
        port = free_port()
        args = cli("hub", "serve", "--data-dir", str(data), "--host", "127.0.0.1")
        args += ["--port", str(port), "--mqtt-port", str(free_port())]
        args += ["--cert-port", str(free_port()), "--log-level", "warning", *db]
        args += ["--broker", broker]
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        with (
            Child("hub", args, log=data / "hub.log", stop_timeout=30) as child,
            httpx.Client(base_url=url, headers=headers, timeout=120) as api,
        ):
            child.wait_ready(lambda: api.get("/health").status_code == 200, 90, poll=0.2)
            yield RunningHub(url, child.pid, api)


def create_edge_devices(api: httpx.Client, ids: list[str]) -> dict[str, str]:
    """Bulk-import edge devices tagged ``bench=1``; returns their MQTT passwords."""
    passwords: dict[str, str] = {}
    for start in range(0, len(ids), IMPORT_BATCH):
        items = []
        for device_id in ids[start : start + IMPORT_BATCH]:
            key = base64.b64encode(secrets.token_bytes(32)).decode()
            passwords[device_id] = p.mqtt_password(device_id, key)
            items.append(
                {
                    "id": device_id,
                    "importMode": "create",
                    "capabilities": {"iotEdge": True},
                    "authentication": {
                        "type": "sas",
                        "symmetricKey": {"primaryKey": key, "secondaryKey": key},
                    },
                    "tags": {"bench": "1"},
                }
            )
        reply = api.post("/devices", json=items)
        if reply.status_code != 200 or not reply.json().get("isSuccessful", False):
            raise RuntimeError(f"bulk import failed: {reply.status_code} {reply.text[:300]}")
    return passwords


def put_deployment(api: httpx.Client) -> None:
    body = {"id": CONFIG_ID, "content": bench_content(), "targetCondition": TARGET, "priority": 10}
    reply = api.put(f"/configurations/{CONFIG_ID}", json=body)
    if reply.status_code not in (200, 201):
        raise RuntimeError(f"PUT configuration failed: {reply.status_code} {reply.text[:300]}")


def metrics(api: httpx.Client) -> dict[str, int]:
    reply = api.get(f"/configurations/{CONFIG_ID}")
    reply.raise_for_status()
    results = reply.json().get("systemMetrics", {}).get("results", {})
    return {k: int(v) for k, v in results.items()}


def _seconds(since: float) -> float:
    return round(time.monotonic() - since, 2)


# ---------------------------------------------------------------------- the two measurements


def measure_rollout(
    devices: int, fail_fraction: float, database_url: str | None, say: Progress, broker: str
) -> dict[str, Any]:
    ids = [f"bench-edge-{i:05d}" for i in range(devices)]
    failing = failing_devices(ids, fail_fraction)
    expect_ok, expect_failed = devices - len(failing), len(failing)
    with serve_hub(database_url, broker) as hub:
        say(f"creating {devices} edge devices")
        passwords = create_edge_devices(hub.api, ids)
        creds = hub.api.get(f"/devices/{ids[0]}/mqttCredentials").json()
        endpoint = Endpoint(creds["host"], int(creds["port"]), creds.get("ca_file"))
        fleet = SimulatedFleet(endpoint, passwords, failing)
        say(f"connecting {devices} simulated agents")
        started = time.monotonic()
        fleet.start()
        try:
            ready = fleet.wait_ready(max(60.0, devices * 0.1))
            connect_s = _seconds(started)
            if ready < devices:
                detail = f"; first error: {fleet.errors[0]}" if fleet.errors else ""
                raise RuntimeError(f"only {ready} of {devices} agents connected{detail}")
            _wait_idle(hub.pid, 30)
            say("deployment PUT; waiting for the agents' reports")
            cpu0, own0 = _cpu_s(hub.pid), _own_cpu_s()
            t0 = time.monotonic()
            put_deployment(hub.api)
            applied_s = ok_s = acked_s = None
            last: dict[str, int] = {}
            deadline = t0 + max(180.0, devices * 0.3)
            while time.monotonic() < deadline:
                last = metrics(hub.api)
                if applied_s is None and last.get("appliedCount") == devices:
                    applied_s = _seconds(t0)
                if acked_s is None and fleet.acked() == devices:
                    acked_s = _seconds(t0)
                if (
                    ok_s is None
                    and last.get("reportedSuccessfulCount") == expect_ok
                    and last.get("reportedFailedCount") == expect_failed
                ):
                    ok_s = _seconds(t0)
                if applied_s is not None and ok_s is not None and acked_s is not None:
                    break
                time.sleep(0.1)
            hub_cpu = _cpu_s(hub.pid) - cpu0
            own_cpu = _own_cpu_s() - own0
            memory = _memory_mb(hub.pid)
        finally:
            fleet.stop()
    return {
        "devices": devices,
        "failFraction": fail_fraction,
        "expected": {"successful": expect_ok, "failed": expect_failed},
        "metrics": last,
        "agentsConnectS": connect_s,
        "appliedS": applied_s,
        "agentsAckedS": acked_s,
        "allReportedS": ok_s,
        "hubCpuS": round(hub_cpu, 2),
        "agentsCpuS": round(own_cpu, 2),
        "hubMemory": memory,
        "agentErrors": fleet.errors[:5],
    }


def measure_assignment(
    devices: int, database_url: str | None, say: Progress, broker: str
) -> dict[str, Any]:
    ids = [f"bench-assign-{i:06d}" for i in range(devices)]
    with serve_hub(database_url, broker) as hub:
        say(f"creating {devices} edge devices")
        t = time.monotonic()
        create_edge_devices(hub.api, ids)
        create_s = _seconds(t)
        say(f"created in {create_s} s")
        _wait_idle(hub.pid, 120)
        say(f"assigning a deployment to {devices} devices")
        cpu0 = _cpu_s(hub.pid)
        t0 = time.monotonic()
        put_deployment(hub.api)
        applied_s = None
        last: dict[str, int] = {}
        deadline = t0 + max(120.0, devices * 0.05)
        while time.monotonic() < deadline:
            last = metrics(hub.api)
            if last.get("appliedCount") == devices:
                applied_s = _seconds(t0)
                break
            time.sleep(0.1)
        return {
            "devices": devices,
            "createS": create_s,
            "appliedS": applied_s,
            "appliedCount": last.get("appliedCount"),
            "hubCpuS": round(_cpu_s(hub.pid) - cpu0, 2),
            "hubMemory": _memory_mb(hub.pid),
        }


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _verdict(seconds: float | None, goal: dict[str, Any], devices: int) -> dict[str, Any]:
    full_size = devices >= goal["devices"]
    met = seconds is not None and seconds <= goal["seconds"]
    return {
        "goal": f"{goal['devices']} devices, {goal['what']} within {goal['seconds']:g} s",
        "pass": met if full_size else None,
        "note": "" if full_size else f"ran with {devices} devices: not judged",
    }


def run_bench(
    devices: int,
    fail_fraction: float,
    database: str,
    database_url: str | None,
    assign_devices: int,
    say: Progress,
    broker: str = "mosquitto",
    assign_only: bool = False,
    assign_on: tuple[str, ...] = ("sqlite", "postgresql"),
) -> dict[str, Any]:
    """Both measurements (``assign_only``: the assignment alone, without simulated agents), the
    assignment on the databases of ``assign_on``."""
    pg_server = database_url or DEFAULT_PG
    pg_problem = pg_reachable(pg_server)
    if database == "postgresql" and pg_problem:
        raise RuntimeError(f"PostgreSQL at {pg_server} not reachable: {pg_problem}")
    result: dict[str, Any] = {"machine": machine(), "database": database, "broker": broker}
    if not assign_only:
        if database == "postgresql":
            with scratch_database(pg_server) as url:
                rollout = measure_rollout(devices, fail_fraction, url, say, broker)
        else:
            rollout = measure_rollout(devices, fail_fraction, None, say, broker)
        rollout["verdict"] = _verdict(rollout["allReportedS"], GOALS["rollout"], devices)
        result["rollout"] = rollout
        say(
            f"rollout: applied after {rollout['appliedS']} s, all reported after "
            f"{rollout['allReportedS']} s, metrics {rollout['metrics']}"
        )
    assignment: dict[str, Any] = {}
    if "sqlite" in assign_on:
        assignment["sqlite"] = measure_assignment(assign_devices, None, say, broker)
        say(f"assignment on SQLite: {assignment['sqlite']}")
    if "postgresql" in assign_on and pg_problem is None:
        with scratch_database(pg_server) as url:
            assignment["postgresql"] = measure_assignment(assign_devices, url, say, broker)
        say(f"assignment on PostgreSQL: {assignment['postgresql']}")
    elif "postgresql" in assign_on:
        assignment["postgresql"] = {"skipped": f"no PostgreSQL at {pg_server}: {pg_problem}"}
    for entry in assignment.values():
        if "appliedS" in entry:
            entry["verdict"] = _verdict(entry["appliedS"], GOALS["assignment"], assign_devices)
    result["assignment"] = assignment
    return result


# ---------------------------------------------------------------------- output


def _mark(verdict: dict[str, Any]) -> str:
    if verdict["pass"] is None:
        return "not judged"
    return "PASS" if verdict["pass"] else "FAIL"


def print_result(result: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    if "rollout" in result:
        _print_rollout(console, result["rollout"], result["database"])
    _print_assignment(console, result["assignment"])
    mach = result["machine"]
    notable = [f for f in ("avx2", "avx512f", "aes", "sha_ni") if f in mach["cpuFlags"]]
    console.print(
        f"CPU: {mach['cpuModel']}, {mach['cpus']} CPUs ({mach['physicalCores']} physical cores), "
        f"flags incl. {' '.join(notable) or 'none of avx2/avx512f/aes/sha_ni'} "
        f"({len(mach['cpuFlags'])} flags in --json). Metrics refresh every 2 s by default, so "
        "metric-based times are late by up to that."
    )


def _print_rollout(console: Any, r: dict[str, Any], database: str) -> None:
    from rich.table import Table

    m = r["metrics"]
    table = Table(title=f"bench rollout: {r['devices']} simulated agents on {database}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("agents connected and read their twin (s)", r["agentsConnectS"]),
        ("PUT -> appliedCount == N (s)", r["appliedS"]),
        ("PUT -> every agent's report accepted (s, agents' clock)", r["agentsAckedS"]),
        ("PUT -> reported successful + failed counts complete (s)", r["allReportedS"]),
        (
            "applied / successful / failed",
            f"{m.get('appliedCount')} / {m.get('reportedSuccessfulCount')} / "
            f"{m.get('reportedFailedCount')}",
        ),
        (
            "expected successful / failed",
            f"{r['expected']['successful']} / {r['expected']['failed']}",
        ),
        ("hub CPU during the rollout (s)", r["hubCpuS"]),
        ("simulated agents' CPU (s)", r["agentsCpuS"]),
        ("hub RSS / peak (MB)", f"{r['hubMemory']['rssMb']} / {r['hubMemory']['peakRssMb']}"),
        (r["verdict"]["goal"], _mark(r["verdict"])),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)


def _print_assignment(console: Any, assignment: dict[str, Any]) -> None:
    from rich.table import Table

    goal = GOALS["assignment"]
    assign = Table(
        title="assignment without agents",
        caption=f"goal: {goal['devices']} devices, {goal['what']} within {goal['seconds']:g} s",
    )
    for column in (
        "database",
        "devices",
        "PUT -> applied (s)",
        "hub CPU (s)",
        "hub RSS MB",
        "goal",
    ):
        assign.add_column(column)
    for db, entry in assignment.items():
        if "skipped" in entry:
            assign.add_row(db, "-", "skipped", "-", "-", entry["skipped"])
            continue
        assign.add_row(
            db,
            str(entry["devices"]),
            str(entry["appliedS"]),
            str(entry["hubCpuS"]),
            str(entry["hubMemory"]["rssMb"]),
            _mark(entry["verdict"]),
        )
    console.print(assign)
