"""Run ``edgefleet serve`` as a real process on free ports and read its banner for them.

with serving(model_dir, tmp_path, keys="k1,k2") as server:
    httpx.post(f"{server.http_url}/score", ...)
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.hub import edgefleet_cmd, stop_process
from tests.support.modules import ROOT

_BANNER = re.compile(r"^serving .*?(?:grpc=(\S+):(\d+).*?)?(?:http=(\S+):(\d+))?\s+keys=")


@dataclass
class ServeProcess:
    process: subprocess.Popen[str]
    log: Path
    grpc_port: int | None
    http_port: int | None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def start_serve(
    model_dir: Path,
    workdir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> ServeProcess:
    """Start ``edgefleet serve --grpc-port 0 --http-port 0 ARGS``; wait for its banner line."""
    log = workdir / f"serve-{len(list(workdir.glob('serve-*.log')))}.log"
    cmd = edgefleet_cmd(
        "serve", "--model", "efficientnet-lite0", "--model-dir", str(model_dir),
        "--grpc-port", "0", "--http-port", "0", *args,
    )  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        bufsize=1,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    found: list[re.Match[str]] = []

    def read_banner() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = _BANNER.match(line)
            if match:
                found.append(match)
                return

    reader = threading.Thread(target=read_banner, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        stop_process(proc)  # type: ignore[arg-type]
        raise AssertionError(f"edgefleet serve did not start:\n{log.read_text()[-3000:]}")
    match = found[0]
    return ServeProcess(
        proc,
        log,
        int(match.group(2)) if match.group(2) else None,
        int(match.group(4)) if match.group(4) else None,
    )


@contextmanager
def serving(model_dir: Path, workdir: Path, *args: str) -> Iterator[ServeProcess]:
    server = start_serve(model_dir, workdir, *args)
    try:
        yield server
    finally:
        code = stop_process(server.process)  # type: ignore[arg-type]
        assert code == 0, server.output()
