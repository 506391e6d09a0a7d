"""``edgefleet bench ...``: the benchmark commands (each imports its benchmark inside the body)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from edgefleet.cli_apps import bench_app, fail
from modules.accelerators.fpga.cli import emit
from modules.featurizer.cli import (
    DEVICE_HELP,
    ENGINE_HELP,
    MODEL_DIR_HELP,
    clear_errors,
    open_store,
    step_status,
)


@bench_app.command("fpga-host")
def bench_fpga_host(
    model: str = typer.Option("efficientnet-lite0", "--model"),
    precision: str = typer.Option("bfp8", "--precision", help="bfp8, msfp9 or msfp8"),
    iterations: int = typer.Option(20, "--iterations"),
    threads: int = typer.Option(1, "--threads", help="1 gives load-robust CPU-time ratios."),
    model_dir: Path | None = typer.Option(None, "--model-dir"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Host cost of the FPGA emulator's BFP graph vs the fp32 graph (wall and CPU time)."""
    from rich.progress import Progress

    from composition.bench.fpga_host import host_overhead
    from modules.accelerators.bfp import UnknownFormatError
    from modules.accelerators.fpga.rewrite import RewriteError
    from modules.accelerators.model_store import ModelStore, StoreError

    try:
        with Progress(transient=True, disable=as_json) as bar:
            task = bar.add_task("fpga-host", total=None)
            report = host_overhead(
                ModelStore(model_dir),
                model,
                precision,
                iterations,
                threads,
                progress=lambda msg: bar.update(task, description=msg),
            )
    except (StoreError, UnknownFormatError, RewriteError) as exc:
        fail(str(exc))
    b1, b8 = report["host_vs_fp32_batch1"], report["host_vs_fp32_batch8"]
    ms = report["ms"]
    emit(
        report,
        as_json,
        [
            f"{model} {precision}: {report['quantized_layers']} layers in BFP, "
            f"{threads} thread(s), {iterations} rounds",
            f"  batch 1: fp32 {ms['fp32_batch1']['wall_p50']} ms, "
            f"BFP {ms['bfp_batch1']['wall_p50']} ms -> {b1['wall']}x wall, {b1['cpu']}x CPU time",
            f"  batch 8: {b8['wall']}x wall, {b8['cpu']}x CPU time (BFP image by image)",
        ],
    )


@bench_app.command("featurizer")
def bench_featurizer(
    model: str = typer.Option("efficientnet-lite0", "--model"),
    accelerator: str = typer.Option("cpu", "--accelerator"),
    precision: str = typer.Option(
        "int8", "--precision", help="A detector takes several, comma-separated: int8,bfp8."
    ),
    iterations: int = typer.Option(200, "--iterations", help="Batch-1 runs (at most)."),
    seconds: float = typer.Option(15.0, "--seconds", help="Time cap per measurement."),
    threads: int | None = typer.Option(None, "--threads", help="Default: physical cores."),
    engine: str | None = typer.Option(None, "--engine", help=ENGINE_HELP),
    device: str | None = typer.Option(None, "--device", help=DEVICE_HELP),
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    eval_set: str = typer.Option(
        "objects", "--eval-set", help="Headline accuracy set: objects or hard (both reported)."
    ),
    eval_per_photo: int | None = typer.Option(
        None,
        "--eval-per-photo",
        min=1,
        help="Views of each evaluation photo (default: 35 for objects, 16 for hard; fewer is "
        "quicker and coarser).",
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Latency/throughput of a featurizer vs the onnxruntime fp32 CPU baseline, and accuracy
    (a detector: latency, work and box agreement with fp32 on a set of photos)."""
    from composition.bench.featurizer import run_bench

    store = open_store(model_dir)
    with clear_errors():
        kind = store.get(model).kind
    if kind == "detector":
        _bench_detector(
            store, model, accelerator, precision, iterations, seconds, threads, device, as_json
        )
        return
    with clear_errors(), step_status(not as_json) as say:
        report = run_bench(
            store,
            model,
            accelerator,
            precision,
            iterations,
            seconds,
            threads,
            engine=engine,
            device=device,
            eval_per_photo=eval_per_photo,
            eval_set=eval_set,
            progress=say,
        )
    if report["notice"]:
        typer.echo(f"warning: {report['notice']}", err=True)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    b, base = report["batch1"], report["baseline_cpu_fp32"]
    synthetic = " (SYNTHETIC weights)" if report["synthetic_weights"] else ""
    lines = [
        f"{model}{synthetic} on {report['ran_on']} {precision} [{report['engine']}]",
        f"  batch 1: p50 {b['p50_ms']} ms, p90 {b['p90_ms']} ms, p99 {b['p99_ms']} ms",
        f"  batch 8: {report['throughput_ips_batch8']} images/s",
        f"  baseline onnxruntime fp32 CPU: p50 {base['p50_ms']} ms, "
        f"{base['throughput_ips_batch8']} images/s",
        f"  speed-up: {report['speedup_p50']}x latency, {report['speedup_throughput']}x throughput",
        f"  {report['achieved_gmacs_per_s']} GMAC/s = {report['fraction_of_peak']} of the "
        f"{report['physical_peak']['used_gmacs']} GMAC/s peak",
    ]
    for name, acc in report["accuracy"].items():
        clear = acc.get("top1_agreement_where_fp32_margin_ge_0.05")
        lines.append(
            f"  top-1 agreement with fp32 on the {name!r} set: "
            f"{acc['top1_agreement_with_fp32']:.2%} of {acc['inputs']} inputs "
            f"({acc['disagreements']} differ; {clear if clear is None else f'{clear:.2%}'} where "
            f"fp32's top-2 margin >= 0.05; fp32 vs itself under half-LSB noise: "
            f"{acc['fp32_agreement_under_half_lsb_input_noise']:.2%})"
        )
    if "emulated_device_ms" in report:
        lines.append(f"  emulated device latency: p50 {report['emulated_device_ms']['p50_ms']} ms")
    typer.echo("\n".join(lines))
    sys.stdout.flush()


def _bench_detector(
    store: Any,
    model: str,
    accelerator: str,
    precision: str,
    iterations: int,
    seconds: float,
    threads: int | None,
    device: str | None,
    as_json: bool,
) -> None:
    from composition.bench.detector import report_lines, run_detector_bench

    if accelerator not in ("cpu", "fpga-emulator"):
        fail(f"the detector bench runs on the cpu or the fpga-emulator (not {accelerator})")
    with clear_errors(), step_status(not as_json) as say:
        try:
            report = run_detector_bench(
                store, model, precision, iterations, seconds, threads, say, accelerator, device
            )
        except ValueError as exc:
            fail(str(exc))
    typer.echo(json.dumps(report, indent=2) if as_json else "\n".join(report_lines(report)))


@bench_app.command("routes")
def bench_routes(
    latency_messages: int = typer.Option(1000, help="Messages for the latency measurement."),
    throughput_messages: int = typer.Option(10000, help="Messages for the throughput runs."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Module-to-module latency/throughput and upstream throughput vs bare paho + mosquitto."""
    from rich.console import Console
    from rich.table import Table

    from composition.bench.routes import run_bench

    console = Console(stderr=True)
    try:
        with console.status("benchmarking") as status:
            result = run_bench(latency_messages, throughput_messages, lambda s: status.update(s))
    except (RuntimeError, OSError) as exc:
        fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(result))
        return
    hub, ratios = result["edgehub"], result["ratios"]
    base, hop = result["baseline_paho_mosquitto"], result["baseline_same_hop_sqlite_relay"]
    table = Table(title="edge hub vs bare paho/mosquitto and a same-hop SQLite relay")
    for col in ("measure", "edge hub", "bare", "same hop", "vs bare", "vs same hop"):
        table.add_column(col)
    m2m = hub["module_to_module"]
    for name, key in (("p50", "p50_ms"), ("p99", "p99_ms")):
        table.add_row(
            f"m2m latency {name} (ms)",
            str(m2m["latency"][key]),
            str(base["latency"][key]),
            str(hop["latency"][key]),
            str(ratios[f"m2m_latency_{name}_vs_baseline"]),
            str(ratios[f"m2m_latency_{name}_vs_same_hop"]),
        )
    table.add_row(
        "m2m messages/s",
        str(m2m["messages_per_s"]),
        str(base["messages_per_s"]),
        str(hop["messages_per_s"]),
        str(ratios["m2m_throughput_vs_baseline"]),
        str(ratios["m2m_throughput_vs_same_hop"]),
    )
    table.add_row(
        "upstream messages/s",
        str(hub["upstream"]["messages_per_s"]),
        str(base["messages_per_s"]),
        "",
        str(ratios["upstream_throughput_vs_baseline"]),
        "",
    )
    Console().print(table)


def _worker_counts(text: str) -> list[int]:
    """``1,2`` -> [1, 2]; one CLI error line for anything else."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or any(n < 1 or n > 64 for n in counts):
        fail("--workers takes worker counts from 1 to 64, comma-separated (e.g. 1,2)")
    return counts


@bench_app.command("ingest")
def bench_ingest(
    devices: int = typer.Option(20, "--devices", min=1, help="Publishing devices."),
    rate: float = typer.Option(400.0, "--rate", min=1.0, help="Messages/s per device."),
    messages: int = typer.Option(1000, "--messages", min=10, help="Messages per device."),
    procs: int = typer.Option(2, "--procs", min=1, help="Publisher processes."),
    iothub_dialect: bool = typer.Option(
        False,
        "--iothub-dialect",
        help="Instead: the embedded broker, IoT Hub's device MQTT dialect beside edgefleet's.",
    ),
    front_end: bool = typer.Option(
        False,
        "--front-end",
        help="Instead: mosquitto; edgefleet's dialect direct to it vs through the hub's MQTT "
        "front end on 8883, and IoT Hub's dialect through the front end.",
    ),
    rounds: int = typer.Option(
        2, "--rounds", min=1, max=10, help="With --front-end: rounds of the three phases."
    ),
    workers: str | None = typer.Option(
        None,
        "--workers",
        help="Instead: hub processes to compare, e.g. 1,2 (PostgreSQL; needs --database-url).",
    ),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        envvar="EDGEFLEET_BENCH_DATABASE_URL",
        help="With --workers: a PostgreSQL server where the bench may create databases.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Stored messages/s, creation-to-commit latency and hub CPU with mosquitto, vs bare MQTT."""
    from composition.bench.ingest import print_result, run_bench
    from composition.bench.ingest_dialects import print_dialects, run_dialects

    def say(message: str) -> None:
        if not as_json:
            typer.echo(message, err=True)

    try:
        if workers is not None:
            from composition.bench.ingest_workers import print_workers, run_workers_bench

            counts = _worker_counts(workers)
            if not (database_url or "").startswith("postgresql"):
                fail(
                    "--workers needs --database-url postgresql://... (the bench creates databases)"
                )
            assert database_url is not None
            found = run_workers_bench(counts, database_url, devices, rate, messages, procs, say)
            print_workers(found, as_json)
            return
        if front_end:
            from composition.bench.ingest_front_end import print_front_end, run_front_end

            found_fe = run_front_end(devices, rate, messages, procs, say, rounds)
            print_front_end(found_fe, as_json)
            return
        if iothub_dialect:
            print_dialects(run_dialects(devices, rate, messages, procs, progress=say), as_json)
            return
        result = run_bench(devices, rate, messages, procs, progress=say)
    except (RuntimeError, OSError) as exc:
        fail(str(exc))
    print_result(result, as_json)


@bench_app.command("agent")
def bench_agent(
    modules: int = typer.Option(5, "--modules", "-n", min=1, max=100, help="Modules to deploy."),
    runtime: str = typer.Option("auto", help="process | docker | auto (both when possible)."),
    edge_hub: bool = typer.Option(True, help="Run the in-agent edge hub (the default config)."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Agent RSS when idle and time from a desired change to all modules running."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn
    from rich.table import Table

    from composition.bench.agent import docker_available, run_bench

    if runtime not in ("process", "docker", "auto"):
        fail("--runtime must be process, docker or auto")
    runtimes = ["process"]
    if runtime == "docker" or (runtime == "auto" and docker_available()):
        runtimes = ["docker"] if runtime == "docker" else ["process", "docker"]
    err = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err) as bar:
        task = bar.add_task("agent bench", total=None)
        try:
            result = run_bench(
                modules,
                runtimes,
                lambda rt: bar.update(task, description=f"runtime {rt}"),
                edge_hub,
            )
        except Exception as exc:  # engine trouble and the like: one line, no traceback
            fail(f"bench failed: {exc}")
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"edge agent, {modules} modules")
    cols = [k for k in result["results"][0] if k != "runtime"]
    table.add_column("runtime")
    for c in cols:
        table.add_column(c)
    for row in result["results"]:
        table.add_row(row["runtime"], *(str(row[c]) for c in cols))
    Console().print(table)


@bench_app.command("query")
def bench_command(
    twins: int = typer.Option(10000, "--twins", min=1, help="Size of the generated fleet."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
    min_seconds: float = typer.Option(
        0.3, "--min-seconds", min=0.0, help="Measure each figure for at least this long."
    ),
) -> None:
    """Evaluations/s of compiled conditions vs. the naive syntax-tree walk (same run)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from composition.bench.query import CONDITIONS, run_bench

    console = Console(stderr=True)
    with console.status(f"evaluating {len(CONDITIONS)} conditions over {twins} twins..."):
        report = run_bench(twins, min_seconds)
    if json_output:
        typer.echo(json.dumps(report))
        return
    table = Table(title=f"query evaluation, {twins} twins")
    for column in ("condition", "matches", "compiled/s", "naive/s", "speedup"):
        table.add_column(column)
    for row in report["results"]:
        table.add_row(
            escape(row["condition"]),
            str(row["matches"]),
            f"{row['compiled_evals_per_s']:,}",
            f"{row['naive_evals_per_s']:,}",
            f"{row['speedup']}x",
        )
    Console().print(table)


@bench_app.command("hub")
def bench_hub(
    devices: int = typer.Option(10_000, "--devices", min=10, help="Fleet size to seed."),
    database_url: str | None = typer.Option(
        None, "--database-url", help="Benchmark this database (default: a temporary SQLite)."
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Keep the data here."),
    operations: int = typer.Option(2000, "--operations", min=10, help="Patches/reads per path."),
    workers: int = typer.Option(
        4, "--workers", min=1, help="Concurrent workers (threads, HTTP clients)."
    ),
    hub_workers: str | None = typer.Option(
        None,
        "--hub-workers",
        help="Also: HTTP figures with `hub serve --workers N` for each N, e.g. 1,2 "
        "(PostgreSQL --database-url; the bench starts a mosquitto).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Twin patch/s, twin read/s and tag-query latency: service layer vs HTTP, same run."""
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from sqlalchemy.exc import SQLAlchemyError

    from composition.bench.hub import run_bench

    counts = _worker_counts(hub_workers) if hub_workers is not None else None
    if counts and not (database_url or "").startswith("postgresql"):
        fail("--hub-workers needs --database-url postgresql://... (processes share one database)")
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as progress:
        task = progress.add_task("seeding", total=devices)

        def report(stage: str, done: int, total: int) -> None:
            if stage == "seeding":
                progress.update(task, completed=done)
            else:
                progress.update(task, description=stage)

        try:
            result = run_bench(devices, database_url, data_dir, operations, workers, report, counts)
        except (SQLAlchemyError, RuntimeError, OSError) as exc:
            fail(str(exc).splitlines()[0])
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print_bench(result)


def _print_bench(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hub benchmark: {result['devices']} devices on {result['database']}")
    clients = result.get("http_clients", result["workers"])
    for column in (
        "figure",
        f"service layer ({result['workers']} threads)",
        f"HTTP ({clients} clients)",
        "HTTP / service",
        "hub CPU ms per HTTP op",
        "client CPU ms per HTTP op",
    ):
        table.add_column(column)
    for key, label in (("twin_patch_per_s", "twin patches/s"), ("twin_read_per_s", "reads/s")):
        entry = result[key]
        table.add_row(
            label,
            str(entry["service"]),
            str(entry["http"]),
            str(entry["http_vs_service"]),
            str(entry.get("http_server_cpu_ms_per_op")),
            str(entry.get("http_client_cpu_ms_per_op")),
        )
    Console().print(table)
    queries = Table(title="tag queries (p50 ms)")
    for column in ("query", "matches", "SQL prefilter", "Python only", "speedup"):
        queries.add_column(column)
    for key in ("region_query", "site_query"):
        entry = result["tag_query"][key]
        queries.add_row(
            key,
            str(entry["matches"]),
            str(entry["prefilter"]["p50_ms"]),
            "-" if entry["python_only"] is None else str(entry["python_only"]["p50_ms"]),
            str(entry["speedup"] or "-"),
        )
    Console().print(queries)
    fleet = Table(title=f"fleet queries over {result['devices']} devices (ms)")
    for column in ("query", "hub p50", "hub max", "hub CPU p50", "evaluator only p50"):
        fleet.add_column(column)
    for key, label in (
        ("tag_filter_page", "tag filter, first page of 100"),
        ("group_by_status", "GROUP BY reported status, COUNT() (bench's devices)"),
        ("group_by_status_fleet", "GROUP BY reported status, COUNT() (no WHERE)"),
    ):
        entry = result["tag_query"].get(key)
        if entry is None:
            continue
        python_only = entry["python_only"]
        fleet.add_row(
            label,
            str(entry["hub"]["p50_ms"]),
            str(entry["hub"]["max_ms"]),
            str(entry["hub"]["cpu_p50_ms"]),
            "-" if python_only is None else str(python_only["p50_ms"]),
        )
    Console().print(fleet)


@bench_app.command("rollout")
def bench_rollout(
    devices: int = typer.Option(1000, "--devices", min=1, help="Simulated edge agents."),
    fail_fraction: float = typer.Option(
        0.0, "--fail-fraction", min=0.0, max=1.0, help="Share of agents that report failure."
    ),
    database: str = typer.Option("sqlite", "--database", help="sqlite or postgresql (rollout)."),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        help="PostgreSQL server to create temporary databases on (default: the test role).",
    ),
    assign_devices: int = typer.Option(
        10_000, "--assign-devices", min=1, help="Devices of the assignment measurement."
    ),
    broker: str = typer.Option(
        "mosquitto", "--broker", help="The hub's broker: mosquitto (managed) or embedded."
    ),
    assign_only: bool = typer.Option(
        False, "--assign-only", help="Only the assignment measurement (no simulated agents)."
    ),
    assign_on: str = typer.Option(
        "sqlite,postgresql", "--assign-on", help="Databases of the assignment measurement."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Seconds from a deployment's PUT to all devices applied and reported, and assignment time."""
    from composition.bench.rollout import print_result, run_bench

    if database not in ("sqlite", "postgresql"):
        fail("--database must be sqlite or postgresql")
    if broker not in ("mosquitto", "embedded"):
        fail("--broker must be mosquitto or embedded")
    assign_dbs = tuple(db.strip() for db in assign_on.split(",") if db.strip())
    if not assign_dbs or set(assign_dbs) - {"sqlite", "postgresql"}:
        fail("--assign-on takes sqlite, postgresql or both, comma-separated")

    def say(message: str) -> None:
        if not as_json:
            typer.echo(message, err=True)

    try:
        result = run_bench(
            devices,
            fail_fraction,
            database,
            database_url,
            assign_devices,
            say,
            broker,
            assign_only,
            assign_dbs,
        )
    except (RuntimeError, OSError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    print_result(result)


@bench_app.command("camera")
def bench_camera(
    fps: float = typer.Option(30.0, "--fps", min=0.1, max=240.0, help="Frames per second played."),
    source: Path | None = typer.Option(
        None, "--source", help="Video file (default: one made from the sample photos)."
    ),
    accelerator: str = typer.Option("cpu", "--accelerator", help="cpu, gpu or fpga-emulator."),
    precision: str = typer.Option("int8", "--precision"),
    seconds: float = typer.Option(20.0, "--seconds", min=0.5, help="Measured seconds."),
    model: str = typer.Option("efficientnet-lite0", "--model"),
    queue_size: int = typer.Option(2, "--queue-size", min=1, help="Frames queued for scoring."),
    threads: int | None = typer.Option(None, "--threads", help="Default: physical cores."),
    serial: bool = typer.Option(
        False, "--serial", help="Preprocess in the scoring worker, not the capture thread."
    ),
    device: str | None = typer.Option(None, "--device", help=DEVICE_HELP),
    model_dir: Path | None = typer.Option(None, "--model-dir", help=MODEL_DIR_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Camera pipeline: capture -> result latency, sustained fps, dropped share, CPU use."""
    from composition.bench.camera import run_camera_bench

    with clear_errors(), step_status(not as_json) as say:
        report = run_camera_bench(
            source,
            fps,
            accelerator,
            precision,
            seconds,
            model,
            model_dir,
            device,
            threads,
            queue_size,
            not serial,
            progress=say,
        )
    if report["notice"]:
        typer.echo(f"warning: {report['notice']}", err=True)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    lat, cpu, machine = report["latency_capture_to_result"], report["cpu"], report["machine"]
    typer.echo(
        "\n".join(
            [
                f"{report['model']} {report['precision']} on {report['accelerator']} "
                f"[{report['engine']}], {report['target_fps']:g} fps for {report['seconds']} s",
                f"  capture -> result: p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, "
                f"p99 {lat['p99_ms']} ms (scoring alone p50 {report['score']['p50_ms']} ms)",
                f"  sustained {report['sustained_fps']} results/s of {report['captured_fps']} "
                f"frames/s captured; dropped {report['frames_dropped']} "
                f"({(report['dropped_share'] or 0):.2%})",
                f"  CPU: {cpu['cores_busy']} cores busy ({cpu['share_of_machine']:.0%} of the "
                f"machine); load average {cpu['load_average_1m_before']} -> "
                f"{cpu['load_average_1m_after']}",
                f"  machine: {machine['cpu']}, {machine['cores']} cores, "
                f"{machine['vector_units']}, VNNI {machine['vnni']}, AMX {machine['amx_int8']}",
                f"  goal (30 fps, p95 <= 50 ms, < 1% dropped): "
                f"{'met' if report['goal']['met'] else 'NOT met'}",
            ]
        )
    )
