"""A load-generator edge module of a chaos run (``python -m composition.chaos.loadmodule DIR``),
started by the edge agent's process runtime: sends ``{"device": "<device>/<module>", "seq": N}``
on output ``out`` at a fixed rate and appends N to ``DIR/accepted.log`` once the edge hub has
acknowledged it (stored for upstream). A send that fails (edge hub restarting, disk full) is
retried with the same message id, so a retry of a message that was in fact stored is suppressed
as a duplicate by the hub. Restarted, it continues after the last logged number. ``{device}`` in
DIR stands for the device id, so one deployment serves a whole fleet."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from composition.chaos.loadgen import last_accepted
from edgefleet import protocol as p
from edgefleet.sdk.module_client import ModuleClient


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=Path)
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args(argv)
    home = Path(str(args.dir).replace("{device}", os.environ["IOTEDGE_DEVICEID"]))
    home.mkdir(parents=True, exist_ok=True)
    source = f"{os.environ['IOTEDGE_DEVICEID']}/{os.environ['IOTEDGE_MODULEID']}"
    client = ModuleClient.create_from_environment()
    client.connect()
    (home / "connected").touch()
    log = home / "accepted.log"
    seq = last_accepted(log) + 1
    failures = 0
    with log.open("a") as out:
        start, sent = time.monotonic(), 0
        while not (home / "stop").exists():
            delay = start + sent / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            msg = p.Message.from_body({"device": source, "seq": seq}, message_id=f"{source}/{seq}")
            try:
                client.send_message_to_output(msg, "out", timeout=5)
            except Exception as exc:  # noqa: BLE001 - retried; counted for the harness
                failures += 1
                (home / "failures").write_text(f"{failures} {type(exc).__name__}: {exc}\n")
                time.sleep(0.5)
                start, sent = time.monotonic(), 0
                continue
            out.write(f"{seq}\n")
            out.flush()
            seq, sent = seq + 1, sent + 1
    client.shutdown()
    (home / "done").touch()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
