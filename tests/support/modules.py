"""Run the shipped edge modules (``python -m modules.<name>``) against a real in-process edge hub.

with edge_hub(tmp_path, None, {"routes": routes}) as hub:
    sink = Sink(hub, "sink")                       # a ModuleClient collecting its inputs
    proc = start_module(hub, "camera", "modules.camera", tmp_path, FRAME_INTERVAL="0.2")
    sink.wait(lambda msgs: len(msgs) >= 2)
    assert stop_module(proc) == 0                  # SIGTERM, clean exit
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.edgehub.hub import EdgeHub
from edgefleet.sdk.module_client import Message
from tests.support.edgehub import module

ROOT = Path(__file__).resolve().parents[2]


class Sink:
    def __init__(self, hub: EdgeHub, module_id: str = "sink") -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self.client = module(hub, module_id)
        self.client.on_message_received = self._add

    def _add(self, message: Message) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait(self, check: Callable[[list[Message]], bool], timeout: float = 60.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; sink got {len(self.messages)} messages")
                self._cond.wait(left)
            return list(self.messages)

    def close(self) -> None:
        self.client.shutdown()


def start_module(
    hub: EdgeHub, module_id: str, package: str, workdir: Path, **env: str
) -> subprocess.Popen[bytes]:
    log = (workdir / f"{module_id}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", package],
        cwd=ROOT,
        env={**os.environ, **hub.module_env(module_id), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_module(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM; returns the exit code (fails the test if the module ignores SIGTERM)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise AssertionError("module did not stop on SIGTERM") from None
    return proc.returncode
