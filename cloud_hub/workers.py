"""``hub serve --workers N``: N hub processes on one machine behind the same listening sockets.

The supervisor binds the HTTP (and HTTPS) sockets once and starts N worker processes
(``python -m cloud_hub.workers``) that inherit them, so the kernel spreads connections over the
workers. Worker ``i`` is the hub instance ``<base>-<i>`` (docs/scale-out.md): its own persistent
session on the shared broker, so a worker that dies is started again under the same name and
gets what the broker kept for it. SIGTERM or Ctrl-C stops every worker (each drains as one hub
does) and then the supervisor.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

from cloud_hub import endpoint, serving
from cloud_hub.run import HubStartError, listeners, run_hub
from cloud_hub.settings import HubSettings

log = logging.getLogger("edgefleet.hub.workers")

ENV = "EDGEFLEET_HUB_WORKER"
RESTART_DELAY_S = 1.0
STOP_TIMEOUT_S = 30.0


def instance_base(settings: HubSettings) -> str:
    """The workers' name prefix: ``--instance``, else this machine's name (so that two machines
    running ``--workers`` against one broker never share a session)."""
    given = (settings.model_extra or {}).get("instance")
    if given:
        return str(given)
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "hub"
    return cleaned[:28]


def refusal(settings: HubSettings, workers: int) -> str | None:
    """Why ``--workers`` cannot run with these settings (one line), or None."""
    broker = str((settings.model_extra or {}).get("broker") or "embedded")
    if not broker.startswith(("mqtt://", "mqtts://")):
        return "--workers needs --broker mqtt://... or mqtts://...: a broker every worker shares"
    if not (settings.database_url or "").startswith("postgresql"):
        return "--workers needs --database-url postgresql://...: one database every worker shares"
    if workers > 64:
        return "--workers: at most 64"
    return None


@dataclass
class _Worker:
    index: int
    instance: str
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0


@dataclass
class Supervisor:
    settings: HubSettings
    count: int
    access_log: bool
    workers: list[_Worker] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> int:
        sockets = serving.bind_all(listeners(self.settings))
        endpoint.record(self.settings)
        base = instance_base(self.settings)
        self.workers = [_Worker(i, f"{base}-{i}") for i in range(self.count)]
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for worker in self.workers:
                self._start(worker, sockets)
            log.info("%d hub workers: %s", self.count, ", ".join(w.instance for w in self.workers))
            while not self.stopping.wait(0.2):
                for worker in self.workers:
                    if worker.process is not None and worker.process.poll() is not None:
                        log.warning(
                            "hub worker %s exited (%s); starting it again",
                            worker.instance,
                            worker.process.returncode,
                        )
                        worker.restarts += 1
                        if self.stopping.wait(RESTART_DELAY_S):
                            break
                        self._start(worker, sockets)
            return self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sock in sockets:
                sock.close()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def _start(self, worker: _Worker, sockets: list[socket.socket]) -> None:
        fds = [s.fileno() for s in sockets]
        for fd in fds:
            os.set_inheritable(fd, True)
        spec = {
            "settings": json.loads(self.settings.model_dump_json()),
            "instance": worker.instance,
            "fds": fds,
            "access_log": self.access_log,
        }
        worker.process = subprocess.Popen(
            [sys.executable, "-m", "cloud_hub.workers"],
            env={**os.environ, ENV: json.dumps(spec)},
            pass_fds=fds,
        )

    def _stop_all(self) -> int:
        running = [w.process for w in self.workers if w.process and w.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return 0


def supervise(settings: HubSettings, count: int, access_log: bool) -> int:
    """Run ``count`` workers until a signal; the exit code. HubStartError when it cannot."""
    problem = refusal(settings, count)
    if problem:
        raise HubStartError(problem)
    serving.configure_logging(settings.log_level)
    try:
        return Supervisor(settings, count, access_log).run()
    except serving.ListenError as exc:
        raise HubStartError(str(exc)) from None


def worker_main() -> None:
    """A worker: the hub on the inherited sockets, as instance ``spec["instance"]``."""
    spec = json.loads(os.environ.pop(ENV))
    settings = HubSettings.model_validate({**spec["settings"], "instance": spec["instance"]})
    sockets = [socket.socket(fileno=fd) for fd in spec["fds"]]
    try:
        started = run_hub(settings, bool(spec["access_log"]), sockets)
    except HubStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0 if started else 1)


if __name__ == "__main__":
    worker_main()
