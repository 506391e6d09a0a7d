"""uploadModuleLogs to the hub's log upload URL (a real hub process)."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import httpx

from edge_agent.methods import BuiltinMethods
from edge_agent.reconciler import Policy, Reconciler
from edge_agent.runtime.process import ProcessRuntime
from edgefleet.manifest import parse_edge_agent
from tests.support.hub import running_hub


def test_upload_module_logs_to_hub(tmp_path: Path) -> None:
    rt = ProcessRuntime(tmp_path / "agent")
    rec = Reconciler({"process": rt}, Policy(stop_timeout=2))
    rec.set_desired(
        parse_edge_agent(
            {
                "schemaVersion": "1.1",
                "runtime": {"type": "docker"},
                "systemModules": {"edgeAgent": {}},
                "modules": {
                    "talker": {
                        "type": "process",
                        "settings": {"command": ["sh", "-c", "echo one; echo two; sleep 100"]},
                    }
                },
            }
        )
    )
    rec.step()
    methods = BuiltinMethods(rec, "edge-1")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(rt.logs("talker")) < 2:
            time.sleep(0.05)
        with running_hub(tmp_path) as hub:
            headers = {"Authorization": f"Bearer {hub.token}"}
            hub.client().create_device("edge-1", {"capabilities": {"iotEdge": True}})
            r = httpx.post(f"{hub.url}/devices/edge-1/logUploads", headers=headers, timeout=60)
            assert r.status_code == 200, r.text
            sas_url = r.json()["sasUrl"]
            payload = {
                "schemaVersion": "1.0",
                "sasUrl": sas_url,
                "items": [{"id": "talker", "filter": {}}],
                "encoding": "gzip",
                "contentType": "json",
            }
            status, task = methods.handle("uploadModuleLogs", payload)
            assert status == 200
            deadline = time.monotonic() + 60  # a fresh deadline: the hub took its own time
            while task["status"] == "Running" and time.monotonic() < deadline:
                time.sleep(0.05)
                task = methods.handle("getTaskStatus", {"correlationId": task["correlationId"]})[1]
            assert task["status"] == "Completed", task
            (item,) = httpx.get(
                f"{hub.url}/devices/edge-1/logUploads", headers=headers, timeout=60
            ).json()
            assert item["module"] == "talker" and item["name"].endswith(".json.gz")
            body = httpx.get(
                f"{hub.url}/devices/edge-1/logUploads/{item['name']}", headers=headers, timeout=60
            ).content
            assert [r["content"] for r in json.loads(gzip.decompress(body))] == ["one", "two"]
            # a made-up token is refused; listing needs a bearer token
            bad = httpx.put(f"{hub.url}/logUploads/nope?module=talker", content=b"x", timeout=60)
            assert bad.status_code == 401
            assert httpx.get(f"{hub.url}/devices/edge-1/logUploads", timeout=60).status_code == 401
    finally:
        rec.shutdown(True)
