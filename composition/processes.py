"""Child processes of the composition roots (a hub, an agent, mosquitto): start, wait until ready,
stop.

``Child`` is a context manager: leaving it stops the process with SIGTERM and kills it when it
has not exited after ``stop_timeout`` seconds, so a failed benchmark leaves nothing running.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_loopback(port: int, tries: int = 50) -> str:
    """A loopback address 127.0.0.N (N random) where ``port`` is free a moment ago, so hubs that
    each need a fixed port (IoT Hub's device SDKs connect to 8883) can run side by side."""
    import random

    for _ in range(tries):
        host = f"127.0.0.{random.randint(2, 254)}"
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return host
    raise RuntimeError(f"no loopback address with port {port} free")


def port_open(port: int, timeout: float = 0.2) -> bool:
    """Something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout).close()
    except OSError:
        return False
    return True


def cli(*args: str) -> list[str]:
    """The argv of ``edgefleet ARGS...`` run by this interpreter."""
    return [sys.executable, "-m", "composition.cli", *args]


class Child:
    """One child process. Its output goes to ``log`` (stdout and stderr), else nowhere; with
    ``capture_stderr`` (and no log) its stderr is kept to explain an early exit."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        log: Path | None = None,
        capture_stderr: bool = False,
        stop_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.log_path = log
        self.stop_timeout = stop_timeout
        self._log: IO[bytes] | None = log.open("wb") if log is not None else None
        if self._log is not None:
            stderr: int | IO[bytes] = subprocess.STDOUT
        else:
            stderr = subprocess.PIPE if capture_stderr else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                argv, stdout=self._log or subprocess.DEVNULL, stderr=stderr
            )
        except BaseException:
            if self._log is not None:
                self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, ready: Callable[[], bool], timeout: float, poll: float = 0.1) -> None:
        """Poll ``ready`` (an exception counts as not ready) until it holds; RuntimeError when the
        process exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited{self._detail()}")
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not become ready{self._detail()}")
            time.sleep(poll)

    def _detail(self) -> str:
        if self.log_path is not None:
            return f"; see {self.log_path}"
        if self.proc.stderr is not None and self.proc.poll() is not None:
            return ": " + self.proc.stderr.read().decode(errors="replace").strip()[-300:]
        return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout`` seconds."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
