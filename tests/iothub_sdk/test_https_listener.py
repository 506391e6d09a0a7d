"""`hub serve --tls-port` with a certificate of one's own, and the start failing in one line."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import httpx

from edgefleet.ca import HubCA
from tests.support.hub import edgefleet_cmd, running_hub


def test_given_certificate_is_served_and_the_endpoint_recorded(tmp_path: Path) -> None:
    own = HubCA(tmp_path / "own-ca").ensure(["127.0.0.1"])
    with running_hub(
        tmp_path,
        tls=True,
        public_host_name="hub.example.test",
        tls_cert=own.server_cert_file,
        tls_key=own.server_key_file,
    ) as hub:
        trusted = ssl.create_default_context(cafile=own.ca_file)
        health = httpx.get(f"https://127.0.0.1:{hub.tls_port}/health", verify=trusted)
        assert health.json()["hostName"] == "hub.example.test"
        hub_ca = ssl.create_default_context(cafile=hub.ca_file)
        try:
            httpx.get(f"https://127.0.0.1:{hub.tls_port}/health", verify=hub_ca)
            raise AssertionError("the hub CA should not have issued this certificate")
        except httpx.ConnectError as exc:
            assert "CERTIFICATE_VERIFY_FAILED" in str(exc)
        printed = subprocess.run(
            edgefleet_cmd("hub", "connection-string", "--data-dir", str(hub.data_dir)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert printed.stdout.startswith(
            f"HostName=hub.example.test:{hub.tls_port};SharedAccessKeyName=iothubowner;"
        )


def test_a_taken_tls_port_stops_the_start_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        done = subprocess.run(
            edgefleet_cmd(
                "hub",
                "serve",
                "--data-dir",
                str(tmp_path / "hub"),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--mqtt-port",
                "0",
                "--tls-port",
                str(taken),
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"error: cannot listen on 127.0.0.1:{taken}: Address already in use"
    half = subprocess.run(
        edgefleet_cmd("hub", "serve", "--data-dir", str(tmp_path / "hub"), "--tls-port", "8443")
        + ["--tls-cert", str(tmp_path / "c.pem")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (half.returncode, half.stderr.strip()) == (
        1,
        "error: --tls-cert and --tls-key go together",
    )
