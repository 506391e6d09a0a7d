"""``edgefleet bench ingest --workers 1,2``: how stored messages/s scale with hub processes.

For each worker count N, in one run: a fresh PostgreSQL database (created on the server of
``--database-url``, dropped afterwards) and ``hub serve --workers N`` on one mosquitto the bench
starts (plain TCP on 127.0.0.1, shared subscriptions split the telemetry, docs/scale-out.md).
The same publishers (paho, QoS 1, a connection per device) send the same messages; the figure is
the rows stored per second (first to last ``enqueued_at``, read from the database) and the CPU
of the hub processes, with the ratio to the first worker count.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloud_hub.db import dbapi_url
from composition.bench.ingest import _cpu, create_bench_devices, print_table, run_publishers
from composition.processes import Child, cli, free_port
from edgefleet.hubclient import HubClient


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new database on the server of ``server_url`` (its SQLAlchemy URL), dropped at the end."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"edgefleet_bench_{uuid.uuid4().hex[:10]}"
    admin = dbapi_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def plain_mosquitto(workdir: Path) -> Iterator[int]:
    """A mosquitto on a free 127.0.0.1 port, anonymous, persistent sessions kept in memory."""
    port = free_port()
    conf = workdir / "mosquitto.conf"
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"{user}listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
        "max_inflight_messages 1000\n"
    )
    with Child("mosquitto", ["mosquitto", "-c", str(conf)], log=workdir / "mosquitto.log") as mq:
        mq.wait_ready(lambda: _accepts(port), 20)
        yield port


def _accepts(port: int) -> bool:
    import socket

    with socket.create_connection(("127.0.0.1", port), 1):
        return True


def _stored(database_url: str) -> tuple[int, float]:
    """(rows, seconds from the first to the last enqueued_at) of the messages table."""
    import psycopg

    with psycopg.connect(dbapi_url(database_url)) as conn:
        row = conn.execute(
            "SELECT count(*), extract(epoch FROM max(enqueued_at) - min(enqueued_at)) FROM messages"
        ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1] or 0.0)


def _hub_cpu(supervisor: int) -> float:
    import psutil

    try:
        procs = [psutil.Process(supervisor), *psutil.Process(supervisor).children(recursive=True)]
    except psutil.Error:
        return 0.0
    return sum(_cpu(p.pid) for p in procs)


def _phase(
    workers: int,
    server_url: str,
    broker_port: int,
    devices: int,
    rate: float,
    messages: int,
    procs: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    with scratch_database(server_url) as db, tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "hub"
        token = subprocess.run(
            cli("hub", "token", "create", "--data-dir", str(data), "--database-url", db)
            + ["--scope", "admin"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.strip()
        port = free_port()
        serve = cli("hub", "serve", "--data-dir", str(data), "--port", str(port))
        serve += ["--database-url", db, "--broker", f"mqtt://127.0.0.1:{broker_port}"]
        serve += ["--instance", "bench", "--log-level", "warning"]
        if workers > 1:
            serve += ["--workers", str(workers)]
        with Child("hub", serve, log=Path(tmp) / "hub.log", stop_timeout=30) as hub:
            say(f"{workers} worker(s): starting the hub")
            with HubClient(f"http://127.0.0.1:{port}", token) as api:
                hub.wait_ready(lambda: api.health() is not None, 90, poll=0.2)
                devs = create_bench_devices(api, devices)
            time.sleep(2.0)  # every worker subscribed
            say(f"{workers} worker(s): publishing {devices} x {messages} messages")
            cpu0, t0 = _hub_cpu(hub.pid), time.monotonic()
            run_publishers(devs, messages, rate, False, procs)
            total = devices * messages
            stored, span, last, progress = 0, 0.0, -1, time.monotonic()
            while stored < total and time.monotonic() - progress < 15:
                stored, span = _stored(db)
                if stored != last:
                    last, progress = stored, time.monotonic()
                time.sleep(0.2)
            cpu1, t1 = _hub_cpu(hub.pid), time.monotonic()
    return {
        "workers": workers,
        "messages": total,
        "stored": stored,
        "storedMsgPerS": round(stored / span, 1) if span > 0 else None,
        "hubCpuCores": round((cpu1 - cpu0) / (t1 - t0), 2) if t1 > t0 else None,
    }


def run_workers_bench(
    worker_counts: list[int],
    server_url: str,
    devices: int,
    rate: float,
    messages: int,
    procs: int = 2,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    say = progress or (lambda _m: None)
    with tempfile.TemporaryDirectory() as tmp, plain_mosquitto(Path(tmp)) as broker_port:
        phases = [
            _phase(n, server_url, broker_port, devices, rate, messages, procs, say)
            for n in worker_counts
        ]
    first = phases[0]["storedMsgPerS"] or 0.0
    for phase in phases:
        rate_n = phase["storedMsgPerS"] or 0.0
        phase["ratioToFirst"] = round(rate_n / first, 3) if first else None
    return {
        "devices": devices,
        "ratePerDevice": rate,
        "messagesPerDevice": messages,
        "database": "postgresql",
        "broker": "mosquitto (external, shared subscriptions)",
        "phases": phases,
        "cpuCount": os.cpu_count(),
    }


def print_workers(result: dict[str, Any], as_json: bool) -> None:
    phases = result["phases"]
    rows = [
        ["stored msg/s", *(str(p["storedMsgPerS"]) for p in phases)],
        ["stored / sent", *(f"{p['stored']} / {p['messages']}" for p in phases)],
        ["hub CPU (cores)", *(str(p["hubCpuCores"]) for p in phases)],
        ["ratio to first", *(str(p["ratioToFirst"]) for p in phases)],
    ]
    columns = [f"{p['workers']} worker(s)" for p in phases]
    print_table(result, as_json, "bench ingest --workers (PostgreSQL)", columns, rows)
