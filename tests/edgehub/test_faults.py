"""Fault tests with real processes: upstream outage, kill -9 of the edge hub while offline.

Two module processes send 100 messages/s each; the upstream link (a real mosquitto behind a TCP
proxy) goes down for several seconds and the edge hub process is killed with SIGKILL and
restarted meanwhile. Every acknowledged message must reach the upstream broker once the link is
back, in order per module (the hub's receiver suppresses wire duplicates by message id, as the
recorder here does).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support.edgehub import DEVICE, Upstream, start_hub_process, upstream_link
from tests.support.mqtt import free_port

COUNT = int(os.environ.get("EDGEHUB_FAULT_COUNT", "1000"))  # per module, at 100 messages/s
RATE = 100.0
MODULES = ("s1", "s2")


def _first_seen_order(up: Upstream, module_id: str) -> list[int]:
    seen: set[str] = set()
    order = []
    for mod, msg in up.messages():
        if mod == module_id and msg.message_id not in seen:
            seen.add(msg.message_id)
            order.append(int(msg.custom_properties["seq"]))
    return order


def test_outage_and_kill9_lose_nothing_acknowledged_and_keep_order(tmp_path: Path) -> None:
    with upstream_link(tmp_path) as up:
        config = {
            "device_id": DEVICE,
            "data_dir": str(tmp_path / "edgehub"),
            "port": free_port(),
            "upstream": {"host": "127.0.0.1", "port": up.proxy.port},
            "desired": {"routes": {"up": "FROM /messages/modules/* INTO $upstream"}},
            "modules": list(MODULES),
        }
        hub = start_hub_process(config, tmp_path / "run1")
        senders = []
        acked = {m: tmp_path / f"{m}.acked" for m in MODULES}
        try:
            for m in MODULES:
                env = {**os.environ, **hub.env[m]}
                cmd = [sys.executable, "-m", "tests.support.edgehub_module", "telemetry"]
                cmd += [str(COUNT), str(RATE), str(acked[m])]
                senders.append(subprocess.Popen(cmd, env=env))
            time.sleep(1.5)
            up.proxy.cut()  # upstream unreachable from here on
            time.sleep(3.0)
            hub.kill9()  # with acknowledged messages in the store
            time.sleep(0.5)
            hub = start_hub_process(config, tmp_path / "run2")
            time.sleep(3.0)
            up.proxy.restore()
            for proc in senders:
                assert proc.wait(120) == 0
            expected = {f"{m}-{i}" for m in MODULES for i in range(COUNT)}
            got = up.wait_ids(expected, timeout=90)
            missing = expected - got
            assert not missing, (
                f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
            )
            for m in MODULES:
                assert sorted(int(x) for x in acked[m].read_text().split()) == list(range(COUNT))
                assert _first_seen_order(up, m) == list(range(COUNT))
        finally:
            for proc in senders:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            hub.stop()
