"""Built-in $edgeAgent direct methods with IoT Edge payloads, on real module processes."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge_agent.methods import BuiltinMethods, parse_time
from edge_agent.reconciler import Policy, Reconciler
from edge_agent.runtime.process import ProcessRuntime
from edgefleet.manifest import parse_edge_agent


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Reconciler, BuiltinMethods]]:
    rt = ProcessRuntime(tmp_path, log_max_bytes=4096, log_backups=2)
    rec = Reconciler({"process": rt}, Policy(interval=0.2, stop_timeout=2))
    script = (
        "i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done; echo ERROR bad; sleep 100"
    )
    rec.set_desired(
        parse_edge_agent(
            {
                "schemaVersion": "1.1",
                "runtime": {"type": "docker"},
                "systemModules": {"edgeAgent": {}},
                "modules": {
                    "talker": {"type": "process", "settings": {"command": ["sh", "-c", script]}}
                },
            }
        )
    )
    rec.step()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any("ERROR" in ln.text for ln in rt.logs("talker")):
        time.sleep(0.05)
    yield rec, BuiltinMethods(rec, "dev")
    rec.shutdown(True)


def logs_payload(**flt: Any) -> dict[str, Any]:
    return {
        "schemaVersion": "1.0",
        "items": [{"id": "talk.*", "filter": flt}],
        "encoding": "none",
        "contentType": "json",
    }


def test_get_module_logs(setup: tuple[Reconciler, BuiltinMethods]) -> None:
    _rec, methods = setup
    assert methods.handle("ping", None) == (200, None)
    status, result = methods.handle("getModuleLogs", logs_payload(tail=3))
    assert status == 200
    (item,) = result
    assert item["id"] == "talker"
    assert [r["content"] for r in item["payload"]] == ["line 198", "line 199", "ERROR bad"]
    assert item["payload"][0]["timestamp"].endswith("Z")
    # rotation kept a bounded amount (4 KB x 3 files) but the newest lines are all there
    status, result = methods.handle("getModuleLogs", logs_payload())
    assert 0 < len(result[0]["payload"]) <= 201
    status, result = methods.handle("getModuleLogs", logs_payload(regex="^ERROR"))
    assert [r["content"] for r in result[0]["payload"]] == ["ERROR bad"]
    status, result = methods.handle(
        "getModuleLogs", logs_payload(since="1h", until=time.time() - 3600)
    )
    assert result[0]["payload"] == []
    gz = {**logs_payload(tail=2), "encoding": "gzip", "contentType": "text"}
    status, result = methods.handle("getModuleLogs", gz)
    text = gzip.decompress(base64.b64decode(result[0]["payloadBytes"])).decode()
    assert text == "line 199\nERROR bad\n"
    assert methods.handle("getModuleLogs", {"items": [{"id": "nobody"}]})[0] == 404
    assert methods.handle("getModuleLogs", {"items": []})[0] == 400
    assert methods.handle("getModuleLogs", {**logs_payload(), "encoding": "zip"})[0] == 400
    assert methods.handle("getModuleLogs", logs_payload(regex="("))[0] == 400
    assert methods.handle("frobnicate", {})[0] == 404


def test_restart_module(setup: tuple[Reconciler, BuiltinMethods]) -> None:
    rec, methods = setup
    before = rec.runtimes["process"].status("talker")
    assert before is not None and before.running
    assert methods.handle("restartModule", {"schemaVersion": "1.0", "id": "talker"})[0] == 200
    after = rec.runtimes["process"].status("talker")
    assert after is not None and after.running and after.ident != before.ident
    assert methods.handle("restartModule", {"schemaVersion": "1.0", "id": "ghost"})[0] == 404
    assert methods.handle("restartModule", {})[0] == 400


def test_upload_module_logs(setup: tuple[Reconciler, BuiltinMethods]) -> None:
    _rec, methods = setup
    got: list[tuple[str, bytes]] = []

    class Sink(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.path, body))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/upload?sig=x"
        payload = {**logs_payload(tail=2), "sasUrl": url, "encoding": "gzip"}
        status, task = methods.handle("uploadModuleLogs", payload)
        assert status == 200 and task["status"] in ("Running", "Completed")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, task = methods.handle("getTaskStatus", {"correlationId": task["correlationId"]})
            if task["status"] != "Running":
                break
            time.sleep(0.05)
        assert task["status"] == "Completed", task
        ((path, body),) = got
        assert path == "/upload?sig=x&module=talker"
        records = json.loads(gzip.decompress(body))
        assert [r["content"] for r in records] == ["line 199", "ERROR bad"]
    finally:
        server.shutdown()
    assert methods.handle("uploadModuleLogs", logs_payload())[0] == 400


def test_parse_time() -> None:
    assert parse_time(12) == 12.0
    assert parse_time("2024-01-01T00:00:00Z") == 1704067200.0
    assert abs(parse_time("15m") - (time.time() - 900)) < 5  # type: ignore[operator]
    assert parse_time(None) is None
