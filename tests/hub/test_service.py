"""The hub as an operator runs it: `edgefleet hub serve`, /health, tokens, SIGTERM."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from tests.support.hub import create_token, edgefleet_cmd, running_hub, stop_process


def test_serve_health_tokens_and_clean_shutdown(tmp_path: Path) -> None:
    with running_hub(tmp_path) as hub:
        health = httpx.get(f"{hub.url}/health", timeout=60)
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert (
            httpx.get(f"{hub.url}/openapi.json", timeout=60).json()["info"]["title"]
            == "edgefleet hub"
        )
        assert httpx.get(f"{hub.url}/docs", timeout=60).status_code == 200

        # no token / bad token: 401; token without the scope: 403
        assert httpx.get(f"{hub.url}/devices", timeout=60).status_code == 401
        bad = httpx.get(f"{hub.url}/devices", headers={"Authorization": "Bearer nope"}, timeout=60)
        assert bad.status_code == 401
        reader = create_token(hub.data_dir, "registry:read")
        as_reader = {"Authorization": f"Bearer {reader}"}
        assert httpx.get(f"{hub.url}/devices", headers=as_reader, timeout=60).status_code == 200
        denied = httpx.put(f"{hub.url}/devices/d1", headers=as_reader, json={}, timeout=60)
        assert denied.status_code == 403
        assert "registry:write" in denied.json()["message"]

        with hub.client() as client:
            client.create_device("d1")
            assert client.get_device("d1")["deviceId"] == "d1"
        process = hub.process
    # the context manager sent SIGTERM: a clean exit, code 0
    assert process.returncode == 0
    assert "Application shutdown complete" in hub.log()


def test_token_is_stored_hashed_and_printed_alone(tmp_path: Path) -> None:
    token = create_token(tmp_path, "deploy", "registry:read")
    assert token and "\n" not in token
    assert token.encode() not in (tmp_path / "hub.db").read_bytes()


def test_token_create_rejects_unknown_scope(tmp_path: Path) -> None:
    result = subprocess.run(
        edgefleet_cmd("hub", "token", "create", "--data-dir", str(tmp_path), "--scope", "root"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "unknown scope 'root'" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_serve_fails_clearly_on_unreachable_database(tmp_path: Path) -> None:
    process = subprocess.Popen(
        edgefleet_cmd(
            "hub",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--port",
            "0",
            "--database-url",
            "postgresql+psycopg://nobody:x@127.0.0.1:1/none",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _out, err = process.communicate(timeout=60)
    finally:
        stop_process(process)  # type: ignore[arg-type]
    assert process.returncode != 0
    assert "cannot open the database" in err
    assert "Traceback" not in err
