"""`edgefleet bench hub`: twin patch/s, twin read/s and tag-query latency over a seeded fleet.

Each figure is measured twice in the same run, with the same number of concurrent workers: through
the service layer in-process (the baseline) and through the REST API of a real `edgefleet hub serve`
process on the same database (``workers`` concurrent keep-alive clients); the report gives the
HTTP/baseline ratios, the server process's CPU time per HTTP operation (Linux), a figure that
other load on the machine disturbs less than the rates, and the client's (this process's) CPU time
per HTTP operation, CPU the hub does not get when both share the machine. Tag queries are also timed
with the SQL prefilter switched off to show what pushing filters into SQL buys.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from cloud_hub.hub import Hub, open_hub
from cloud_hub.settings import HubSettings
from cloud_hub.twin_query import Queries
from composition.bench.http_load import run_load, twin_patch, twin_read
from composition.processes import Child, cli, free_port
from edgefleet.utctime import utc_now

REGIONS = [f"region-{i}" for i in range(10)]
STATUSES = ["running", "degraded", "offline", "updating"]
SEED_BATCH = 500


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def seed(hub: Hub, prefix: str, devices: int, progress: Callable[[int], None]) -> list[str]:
    """``devices`` devices through the registry's bulk create (every tenth an IoT Edge device),
    each with a reported ``status`` written in bulk as one reported patch would leave it."""
    ids = [f"{prefix}{i:06d}" for i in range(devices)]
    for start in range(0, devices, SEED_BATCH):
        batch = [
            (
                device_id,
                {"capabilities": {"iotEdge": i % 10 == 0}},
                {
                    "location": {"region": REGIONS[i % len(REGIONS)], "site": f"site-{i % 500}"},
                    "bench": prefix,
                    "rank": i,
                },
            )
            for i, device_id in enumerate(ids[start : start + SEED_BATCH], start)
        ]
        hub.registry.create_devices(batch)
        _report_status(hub, ids[start : start + SEED_BATCH], start)
        progress(len(batch))
    return ids


def _report_status(hub: Hub, ids: list[str], first: int) -> None:
    from cloud_hub.bulk_sql import encode_json, update_rows
    from cloud_hub.models import DEVICE_TWIN, TwinRow
    from cloud_hub.twindoc import build_metadata, iso

    now = utc_now()
    stamp = iso(now) or ""
    docs = [{"status": status} for status in STATUSES]
    texts = [(encode_json(d), encode_json(build_metadata(d, stamp, 2))) for d in docs]
    rows = []
    for i, device_id in enumerate(ids, first):
        reported, meta = texts[i % len(texts)]
        rows.append(
            {
                "device_id": device_id,
                "module_id": DEVICE_TWIN,
                "reported": reported,
                "reported_meta": meta,
                "reported_version": 2,
                "version": 2,
                "updated_at": now,
            }
        )
    with hub.db.write_conn() as conn:
        update_rows(
            conn,
            TwinRow.__table__,  # type: ignore[arg-type]
            ("device_id", "module_id"),
            rows,
            json_text=("reported", "reported_meta"),
        )


def _timed_threads(workers: int, run: Callable[[int], None], first_seed: int) -> float:
    """Wall seconds of ``workers`` threads running ``run(seed)``, seeds from ``first_seed`` on."""
    threads = [threading.Thread(target=run, args=(first_seed + i,)) for i in range(workers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def _threaded(workers: int, count: int, work: Callable[[random.Random, int], None]) -> float:
    """Run ``count`` operations split over ``workers`` threads; returns operations/s."""
    per_worker = count // workers
    failures: list[BaseException] = []

    def run(seed_value: int) -> None:
        rng = random.Random(seed_value)
        try:
            for i in range(per_worker):
                work(rng, i)
        except BaseException as exc:  # reported after the join
            failures.append(exc)

    elapsed = _timed_threads(workers, run, first_seed=1)
    if failures:
        raise RuntimeError(f"service benchmark failed: {failures[0]}")
    return _rate(per_worker * workers, elapsed)


def _service_patches(hub: Hub, ids: list[str], count: int, workers: int) -> float:
    def patch(rng: random.Random, i: int) -> None:
        hub.twins.patch_desired(rng.choice(ids), None, {"bench": {"seq": i, "fps": i % 30}})

    return _threaded(workers, count, patch)


def _service_reads(hub: Hub, ids: list[str], count: int, workers: int) -> float:
    def read(rng: random.Random, _i: int) -> None:
        hub.twins.get_twin(rng.choice(ids))

    return _threaded(workers, count, read)


def _http_run(url: str, token: str, ids: list[str], count: int, workers: int, patch: bool) -> float:
    operation = twin_patch(ids) if patch else twin_read(ids)
    result = run_load(url, token, workers, count, operation)
    if result.errors:
        raise RuntimeError(f"HTTP benchmark failed: {result.errors[0]}")
    return result.per_second


def _process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process and its children (a ``--workers`` supervisor's
    hub processes), None where that cannot be read."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        return sum(sum(p.cpu_times()[:2]) for p in procs)
    except psutil.Error:
        return None


def _own_cpu_s() -> float:
    import os

    times = os.times()
    return times.user + times.system


def _http_measured(
    pid: int, url: str, token: str, ids: list[str], count: int, workers: int, patch: bool
) -> tuple[float, float | None, float | None]:
    """(operations/s, server CPU ms per operation, client CPU ms per operation) of one run.

    The client (this process: ``workers`` keep-alive connections of ``http_load``) runs on the
    same machine as the hub, so its CPU is CPU the hub did not get.
    """
    before = _process_cpu_s(pid)
    client_before = _own_cpu_s()
    rate = _http_run(url, token, ids, count, workers, patch)
    client_ms = _own_cpu_s() - client_before
    after = _process_cpu_s(pid)
    done = (count // workers) * workers
    if not done:
        return rate, None, None
    client = round(client_ms * 1000 / done, 3)
    if before is None or after is None:
        return rate, None, client
    return rate, round((after - before) * 1000 / done, 3), client


def _latency_ms(fn: Callable[[], Any], runs: int) -> dict[str, float]:
    """Wall milliseconds (median, max) and this process's CPU milliseconds (median) of ``fn``.

    The CPU figure moves less with other load on a shared machine; on SQLite it is the whole
    query (the database runs in this process), on PostgreSQL the hub's side only.
    """
    fn()  # warm-up
    samples = []
    cpu = []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "max_ms": round(max(samples), 2),
        "cpu_p50_ms": round(statistics.median(cpu), 2),
    }


def _query_all(queries: Queries, text: str) -> int:
    total, token = 0, None
    while True:
        page = queries.run(text, 10_000, token)
        total += len(page.items)
        token = page.continuation
        if not token:
            return total


class _NoPrefilter(Queries):
    """Queries with nothing pushed into SQL: every twin goes through the evaluator."""

    def _prefilter(self, query: Any) -> None:
        return None

    def _counted_in_sql(self, query: Any) -> None:
        return None


# Above this fleet size the evaluator-only figures are left out (seconds per query).
PYTHON_ONLY_MAX_DEVICES = 20_000


def _fleet_queries(
    queries: Queries, plain: Queries, prefix: str, devices: int, runs: int
) -> dict[str, Any]:
    """A tag filter's first page (100 twins) and GROUP BY over reported properties, timed as
    the hub runs them and, on small fleets, with everything in the evaluator. The GROUP BY runs
    over the bench's devices (``WHERE tags.bench = ...``) and, when the database holds nothing
    else, also over the whole fleet without WHERE."""
    tag_q = (
        f"SELECT * FROM devices WHERE tags.bench = '{prefix}' AND tags.location.site = 'site-42'"
    )
    group = "SELECT properties.reported.status AS status, COUNT() AS n FROM devices"
    by = " GROUP BY properties.reported.status"
    small = devices <= PYTHON_ONLY_MAX_DEVICES

    def grouped(text: str) -> dict[str, Any]:
        rows = queries.all(text)
        return {
            "query": text,
            "rows": rows,
            "hub": _latency_ms(lambda: queries.all(text), runs),
            "python_only": _latency_ms(lambda: plain.all(text), 1) if small else None,
            "evaluator_agrees": plain.all(text) == rows if small else None,
        }

    alone = queries.count("SELECT deviceId FROM devices") == devices
    return {
        "tag_filter_page": {
            "query": tag_q,
            "page_size": 100,
            "items": len(queries.run(tag_q, 100).items),
            "hub": _latency_ms(lambda: queries.run(tag_q, 100), runs),
            "python_only": _latency_ms(lambda: plain.run(tag_q, 100), runs) if small else None,
        },
        "group_by_status": grouped(f"{group} WHERE tags.bench = '{prefix}'{by}"),
        "group_by_status_fleet": grouped(group + by) if alone else None,
    }


@contextmanager
def _serve(
    data_dir: Path, database_url: str | None, hub_workers: int = 1, broker_port: int | None = None
) -> Iterator[tuple[str, int]]:
    """``hub serve`` on the bench's data; with ``broker_port``, as ``hub_workers`` instances on
    that external broker (``--workers``)."""
    port = free_port()
    args = cli("hub", "serve", "--data-dir", str(data_dir), "--port", str(port))
    args += ["--log-level", "warning"]
    if broker_port is None:
        args += ["--mqtt-port", "0"]
    else:
        args += ["--broker", f"mqtt://127.0.0.1:{broker_port}", "--instance", "bench"]
        if hub_workers > 1:
            args += ["--workers", str(hub_workers)]
    if database_url:
        args += ["--database-url", database_url]
    url = f"http://127.0.0.1:{port}"
    with Child("hub", args, capture_stderr=True, stop_timeout=20) as hub:
        hub.wait_ready(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 60)
        yield url, hub.pid


def run_bench(
    devices: int,
    database_url: str | None,
    data_dir: Path | None,
    operations: int,
    workers: int,
    progress: Callable[[str, int, int], None],
    hub_workers: list[int] | None = None,
) -> dict[str, Any]:
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgefleet-bench-")
        data_dir = Path(tmp.name)
    hub = open_hub(HubSettings(data_dir=data_dir, database_url=database_url))
    prefix = f"bench-{uuid.uuid4().hex[:6]}-"
    try:
        start = time.perf_counter()
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            progress("seeding", done, devices)

        ids = seed(hub, prefix, devices, step)
        seed_seconds = time.perf_counter() - start
        progress("service layer", 0, 1)
        svc_patch = _service_patches(hub, ids, operations, workers)
        svc_read = _service_reads(hub, ids, operations, workers)

        queries = Queries(hub.db)
        plain = _NoPrefilter(hub.db)
        region_q = (
            f"SELECT * FROM devices WHERE tags.bench = '{prefix}' "
            "AND tags.location.region = 'region-3'"
        )
        site_q = (
            f"SELECT deviceId FROM devices WHERE tags.bench = '{prefix}' "
            "AND tags.location.site = 'site-42'"
        )
        count_q = (
            f"SELECT tags.location.region AS region, COUNT() AS n FROM devices "
            f"WHERE tags.bench = '{prefix}' GROUP BY tags.location.region"
        )
        region_matches = _query_all(queries, region_q)
        site_matches = _query_all(queries, site_q)
        progress("queries", 0, 1)
        query_runs = 5

        def python_only(text: str) -> dict[str, float] | None:
            if devices > PYTHON_ONLY_MAX_DEVICES:
                return None
            return _latency_ms(lambda: _query_all(plain, text), query_runs)

        query: dict[str, Any] = {
            "region_query": {
                "matches": region_matches,
                "prefilter": _latency_ms(lambda: _query_all(queries, region_q), query_runs),
                "python_only": python_only(region_q),
            },
            "site_query": {
                "matches": site_matches,
                "prefilter": _latency_ms(lambda: _query_all(queries, site_q), query_runs),
                "python_only": python_only(site_q),
            },
            "group_by_count": _latency_ms(lambda: _query_all(queries, count_q), 3),
            **_fleet_queries(queries, plain, prefix, devices, query_runs),
        }
        for entry in (query["region_query"], query["site_query"]):
            slow = entry["python_only"]
            fast = max(entry["prefilter"]["p50_ms"], 1e-6)
            entry["speedup"] = None if slow is None else round(slow["p50_ms"] / fast, 2)

        progress("HTTP", 0, 1)
        token = hub.tokens.create(["admin"], name="bench")
        with _serve(data_dir, database_url) as (url, pid):
            http_patch, patch_cpu, patch_client = _http_measured(
                pid, url, token, ids, operations, workers, True
            )
            http_read, read_cpu, read_client = _http_measured(
                pid, url, token, ids, operations, workers, False
            )
            headers = {"Authorization": f"Bearer {token}", "x-ms-max-item-count": "10000"}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                http_site = _latency_ms(
                    lambda: client.post("/devices/query", json={"query": site_q}), query_runs
                )
        query["site_query"]["http"] = http_site
        by_processes = (
            _by_hub_workers(data_dir, database_url, token, ids, operations, workers, hub_workers)
            if hub_workers
            else None
        )
        return {
            "by_hub_workers": by_processes,
            "database": hub.db.dialect,
            "devices": devices,
            "operations": operations,
            "workers": workers,
            "http_clients": workers,
            "seed_seconds": round(seed_seconds, 2),
            "twin_patch_per_s": {
                "service": svc_patch,
                "http": http_patch,
                "http_vs_service": round(http_patch / svc_patch, 3) if svc_patch else None,
                "http_server_cpu_ms_per_op": patch_cpu,
                "http_client_cpu_ms_per_op": patch_client,
            },
            "twin_read_per_s": {
                "service": svc_read,
                "http": http_read,
                "http_vs_service": round(http_read / svc_read, 3) if svc_read else None,
                "http_server_cpu_ms_per_op": read_cpu,
                "http_client_cpu_ms_per_op": read_client,
            },
            "tag_query": query,
        }
    finally:
        _cleanup(hub, prefix, database_url is not None)
        hub.close()
        if tmp is not None:
            tmp.cleanup()


def _by_hub_workers(
    data_dir: Path,
    database_url: str | None,
    token: str,
    ids: list[str],
    operations: int,
    clients: int,
    counts: list[int],
) -> list[dict[str, Any]]:
    """HTTP twin patches/s and reads/s with ``hub serve --workers N`` for each N (one mosquitto
    the bench starts; PostgreSQL), and each count's ratio to the first."""
    from composition.bench.ingest_workers import plain_mosquitto

    found: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, plain_mosquitto(Path(tmp)) as broker_port:
        for count in counts:
            with _serve(data_dir, database_url, count, broker_port) as (url, pid):
                patch, patch_cpu, _ = _http_measured(
                    pid, url, token, ids, operations, clients, True
                )
                read, read_cpu, _ = _http_measured(pid, url, token, ids, operations, clients, False)
            found.append(
                {
                    "hub_workers": count,
                    "twin_patch_per_s": patch,
                    "twin_read_per_s": read,
                    "server_cpu_ms_per_patch": patch_cpu,
                    "server_cpu_ms_per_read": read_cpu,
                }
            )
    first = found[0]
    for entry in found:
        for key in ("twin_patch_per_s", "twin_read_per_s"):
            entry[f"{key}_ratio"] = round(entry[key] / first[key], 3) if first[key] else None
    return found


def _cleanup(hub: Hub, prefix: str, shared_database: bool) -> None:
    """Remove the benchmark's devices from a database the user pointed us at."""
    if not shared_database:
        return
    from sqlalchemy import delete

    from cloud_hub.models import DeviceRow, ModuleRow, TokenRow, TwinRow

    with hub.db.write() as session:
        like = prefix + "%"
        session.execute(delete(TwinRow).where(TwinRow.device_id.like(like)))
        session.execute(delete(ModuleRow).where(ModuleRow.device_id.like(like)))
        session.execute(delete(DeviceRow).where(DeviceRow.device_id.like(like)))
        session.execute(delete(TokenRow).where(TokenRow.name == "bench"))
