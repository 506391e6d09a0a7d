"""``edgefleet serve`` as a process: keys from the environment, a burst beyond the pool, SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.scoring.conftest import CATS
from tests.support.hub import edgefleet_cmd
from tests.support.scoring import start_serve


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_burst_beyond_the_pool_gets_429s_never_errors_then_sigterm_stops_cleanly(
    model_dir: Path, tmp_path: Path, photos: dict[str, Path]
) -> None:
    env = {"SCORING_PRIMARY_KEY": "env-key", "SCORING_SECONDARY_KEY": ""}
    server = start_serve(model_dir, tmp_path, "--queue", "1", env=env)
    try:
        assert server.http_port is not None and server.grpc_port is not None
        url = f"{server.http_url}/score"
        jpeg = photos["chelsea.jpg"].read_bytes()
        headers = {"Authorization": "Bearer env-key", "Content-Type": "image/jpeg"}
        assert httpx.post(url, content=jpeg, timeout=60).status_code == 401

        def post(_: int) -> int:
            return httpx.post(url, content=jpeg, headers=headers, timeout=120).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(post, range(16)))
        assert set(codes) <= {200, 429}, codes
        assert 200 in codes
        after = httpx.post(url, content=jpeg, headers=headers, timeout=60)
        assert after.status_code == 200 and after.json()["top5"][0]["class_id"] in CATS
    finally:
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(30)
    assert code == 0, server.output()
    assert server.process.stdout is not None and "stopped" in server.process.stdout.read()
    assert _refused(server.http_port) and _refused(server.grpc_port)


def test_unknown_model_is_one_line_error(model_dir: Path) -> None:
    done = subprocess.run(
        edgefleet_cmd("serve", "--model", "no-such-model", "--model-dir", str(model_dir)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot open no-such-model on cpu")
    assert "Traceback" not in done.stderr
