"""The demo's live table and its closing summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from composition.demo.manifest import DEVICE_ID, MODULES, SCORING, SENSOR
from composition.demo.observed import Observed

if TYPE_CHECKING:
    from composition.demo.session import Demo


def live_view(seen: Observed, left: float | None) -> Any:
    """The live table; ``left`` is None when the demo runs until Ctrl-C."""
    from rich.table import Table

    when = "Ctrl-C to stop" if left is None else f"{left:.0f}s left"
    table = Table(title=f"arriving at the hub ({when})", title_justify="left")
    table.add_column("module")
    table.add_column("messages", justify="right")
    table.add_column("latest")
    reading = seen.latest_reading or {}
    machine, ambient = reading.get("machine") or {}, reading.get("ambient") or {}
    sensor_text = (
        f"machine {machine.get('temperature', 0):.1f}°C, "
        f"ambient {ambient.get('temperature', 0):.1f}°C {ambient.get('humidity', 0):.0f}% rh"
        if reading
        else ""
    )
    result_text = (
        f"camera frame {seen.last.frame} -> {seen.last.label} {seen.last.score:.2f}"
        if seen.last
        else "(waiting for the first scored frame)"
    )
    table.add_row(SENSOR, str(seen.by_module.get(SENSOR, 0)), sensor_text)
    table.add_row(SCORING, str(seen.by_module.get(SCORING, 0)), result_text)
    for frame, result in sorted(seen.results.items()):
        table.add_row("", "", f"  {frame}: {result.label} ({result.class_id}) {result.score:.2f}")
    table.add_row("total", str(seen.total), "")
    return table


def summary_of(demo: Demo, interrupted: bool) -> dict[str, Any]:
    modules = demo.reported.get("modules") or {}
    seen = demo.seen
    return {
        "dataDir": str(demo.data_dir),
        "hub": demo.hub_url,
        "deviceId": DEVICE_ID,
        "durationSecs": round(demo.watched, 1),
        "interrupted": interrupted,
        "messagesStored": seen.total,
        "messagesByModule": dict(sorted(seen.by_module.items())),
        "scoringResults": seen.result_count,
        "latestResults": [r.json() for _, r in sorted(seen.results.items())],
        "latestReading": seen.latest_reading,
        "modules": {m: (modules.get(m) or {}).get("runtimeStatus") for m in MODULES},
        "exitCodes": demo.exit_codes,
        "logs": str(demo.logs),
    }


def print_summary(console: Any, summary: dict[str, Any]) -> None:
    console.print(
        f"\n[bold]summary[/bold]: {summary['messagesStored']} messages stored at the hub "
        f"in {summary['durationSecs']:.0f}s ({summary['messagesByModule']})"
    )
    for r in summary["latestResults"]:
        console.print(
            f"  camera frame {r['frame']} -> {r['label']} ({r['classId']}) {r['score']:.2f}"
        )
    console.print(f"  exit codes: {summary['exitCodes']}; data and logs: {summary['dataDir']}")
