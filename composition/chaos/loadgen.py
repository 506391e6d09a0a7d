"""A simulated device of a chaos run (``python -m composition.chaos.loadgen``): sends
``{"device": ID, "seq": N}`` through the SDK's durable outbox at a fixed rate and appends N to its
accepted log once ``send_message`` has returned (the message is then the device's
responsibility). Restarted after a kill, it continues after the last logged number. It sends
until ``<dir>/stop`` exists, then waits for its outbox to drain and exits.

With ``--twin`` it also appends every desired-properties change its handler sees to
``desired.log`` (one JSON line: ``$version`` and ``chaosSeq``) and answers every direct method
with 200 and its name. Only then: a desired handler makes the SDK fetch the twin after every
connect, and drop a connection on which that fetch is not answered (see ``docs/chaos.md``)."""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from edgefleet.sdk.device_client import DeviceClient, MethodRequest, MethodResponse


def last_accepted(log: Path) -> int:
    if not log.exists():
        return -1
    lines = [line for line in log.read_text().split("\n") if line.strip().isdigit()]
    return int(lines[-1]) if lines else -1


def desired_line(desired: dict[str, Any]) -> str:
    return json.dumps({"version": desired.get("$version"), "chaosSeq": desired.get("chaosSeq")})


def _record_desired(out: TextIO, desired: dict[str, Any]) -> None:
    out.write(desired_line(desired) + "\n")
    out.flush()


def _answer(request: MethodRequest) -> MethodResponse:
    return MethodResponse.create_from_method_request(request, 200, {"method": request.name})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=Path, help="the device's data directory")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--twin", action="store_true", help="log desired, answer methods")
    args = parser.parse_args(argv)
    home: Path = args.dir
    creds = json.loads((home / "credentials.json").read_text())
    creds["host"] = (
        (home / "host").read_text().strip() if (home / "host").exists() else creds["host"]
    )
    if (home / "port").exists():
        creds["port"] = int((home / "port").read_text())
    device = creds["client_id"]
    client = DeviceClient.create_from_credentials(
        creds, outbox_path=home / "outbox.db", keepalive=4, backoff_max=2.0
    )
    log = home / "accepted.log"
    seq = last_accepted(log) + 1
    desired_log = (home / "desired.log").open("a")
    if args.twin:
        client.on_twin_desired_properties_patch_received = partial(_record_desired, desired_log)
        client.on_method_request_received = _answer
    client.connect(timeout=60)
    (home / "connected").touch()
    with log.open("a") as out:
        start = time.monotonic()
        sent = 0
        while not (home / "stop").exists():
            due = start + sent / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            client.send_message({"device": device, "seq": seq})
            out.write(f"{seq}\n")
            out.flush()
            seq += 1
            sent += 1
    client.wait_for_outbox_empty(args.drain_timeout)
    client.shutdown()
    desired_log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
