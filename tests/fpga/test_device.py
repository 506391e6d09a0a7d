"""The emulated FPGA device as a real subprocess, driven over its UNIX socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modules.accelerators.fpga.client import (
    DeviceProcess,
    FpgaDevice,
    FpgaDeviceError,
    start_device_process,
)
from modules.accelerators.fpga.protocol import (
    MAGIC,
    MAX_PAYLOAD,
    encode_frame,
    parse_header,
    read_frame,
)
from modules.accelerators.model_store import ModelStore
from modules.accelerators.select import open_accelerator
from tests.support.fpga import TINY_INPUT, reference_features, tiny_store

FLASH_MS = 150.0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return tiny_store(tmp_path_factory.mktemp("models"))


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ef-fpga-"))  # short: AF_UNIX paths are <= 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def device(store: ModelStore) -> Iterator[DeviceProcess]:
    root = Path(tempfile.mkdtemp(prefix="ef-fpga-"))
    log = (root / "device.log").open("wb")
    proc = start_device_process(
        "fpga0", root / "fpga0.sock", model_dir=store.root, flash_ms=FLASH_MS, log=log
    )
    yield proc
    proc.stop()
    log.close()
    shutil.rmtree(root, ignore_errors=True)


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *TINY_INPUT)).astype(np.float32)


def test_load_infer_and_status(device: DeviceProcess, store: ModelStore) -> None:
    with device.client() as dev:
        info = dev.load("efficientnet-lite0", "bfp8")
        assert info["model"] == "efficientnet-lite0" and info["precision"] == "bfp8"
        assert info["quantized_layers"] == 3 and info["skipped_layers"] == []
        assert info["load_wall_ms"] >= FLASH_MS  # the emulated flash delay is real time
        x = _batch(3)
        result = dev.infer(x)
        assert result.features.shape == (3, 24)
        np.testing.assert_allclose(
            result.features,
            reference_features(store, "efficientnet-lite0", "bfp8", x),
            rtol=1e-5,
            atol=1e-6,
        )
        assert result.device_ms > 0 and result.host_ms > 0
        assert result.latency["batch"] == 3 and result.latency["cycles"] > 0
        st = dev.status()
        assert st["model"] == "efficientnet-lite0" and st["precision"] == "bfp8"
        assert st["counters"]["images"] >= 3 and st["counters"]["loads"] >= 1


def test_loading_another_model_replaces_the_bitstream(
    device: DeviceProcess, store: ModelStore
) -> None:
    with device.client() as dev:
        dev.load("efficientnet-lite0", "msfp9")
        info = dev.load("ResNet-50", "msfp8")  # names are matched loosely
        assert info["model"] == "resnet50" and info["replaced"] == "efficientnet-lite0"
        st = dev.status()
        assert (st["model"], st["precision"]) == ("resnet50", "msfp8")
        x = _batch(2, seed=5)
        out = dev.infer(x).features
        assert out.shape == (2, 32)
        np.testing.assert_allclose(
            out, reference_features(store, "resnet50", "msfp8", x), rtol=1e-5, atol=1e-6
        )
        # the old model's input still fits, but the card answers with the new model's features
        with pytest.raises(FpgaDeviceError) as err:
            dev.infer(np.zeros((1, 3, 8, 8), np.float32))
        assert err.value.code == "bad_request"


def test_unsupported_and_missing_models_are_refused(device: DeviceProcess) -> None:
    with device.client() as dev:
        dev.load("resnet50", "msfp9")
        with pytest.raises(FpgaDeviceError) as err:
            dev.load("mobilenet-v2", "msfp9")  # in the store, but no bitstream for it
        assert err.value.code == "unsupported_model" and "support only" in str(err.value)
        with pytest.raises(FpgaDeviceError) as err:
            dev.load("vgg16", "msfp9")  # supported, not built
        assert err.value.code == "model_not_found"
        with pytest.raises(FpgaDeviceError) as err:
            dev.load("resnet50", "fp32")
        assert err.value.code == "unsupported_precision"
        st = dev.status()
        assert st["model"] == "resnet50" and st["counters"]["refused"] >= 2  # previous stays
        assert dev.infer(_batch(1)).features.shape == (1, 32)


def _raw(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(path))
    return sock


def test_malformed_requests_get_errors_not_a_crash(device: DeviceProcess) -> None:
    # garbage bytes: one error frame, then the device closes this connection
    with _raw(device.path) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        raw, _ = read_frame(sock)
        assert parse_header(raw)["code"] == "protocol"
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:  # closed with our unread garbage still queued
            closed = True
        assert closed
    # well-framed but bad requests: errors, and the connection stays usable
    with _raw(device.path) as sock:
        bad_json = b"{not json"
        sock.sendall(struct.pack(">4sII", MAGIC, len(bad_json), 0) + bad_json)
        assert parse_header(read_frame(sock)[0])["code"] == "bad_request"
        cases: list[tuple[dict[str, Any], bytes]] = [
            ({"op": "reboot"}, b""),
            ({"op": "infer", "shape": [1, 3, 16, 16]}, b"\0" * 10),
            ({"op": "infer", "shape": "big"}, b""),
            ({"op": "load", "model": 5}, b""),
        ]
        for header, payload in cases:
            sock.sendall(encode_frame(header, payload))
            reply = parse_header(read_frame(sock)[0])
            assert reply["ok"] is False and reply["code"] == "bad_request", reply
        sock.sendall(encode_frame({"op": "ping"}))
        assert parse_header(read_frame(sock)[0])["ok"] is True
    # an absurd payload length is refused before anything is allocated
    with _raw(device.path) as sock:
        sock.sendall(struct.pack(">4sII", MAGIC, 2, MAX_PAYLOAD + 1) + b"{}")
        assert parse_header(read_frame(sock)[0])["code"] == "protocol"
    # a client that vanishes mid-frame does not hurt either
    with _raw(device.path) as sock:
        sock.sendall(struct.pack(">4sII", MAGIC, 100, 1000) + b"{")
    with device.client() as dev:
        assert dev.status()["counters"]["errors"] >= 5


def test_concurrent_clients_are_serialized(device: DeviceProcess, store: ModelStore) -> None:
    with device.client() as dev:
        dev.load("efficientnet-lite0", "msfp9")
    inputs = [_batch(2, seed=100 + i) for i in range(4)]
    expected = [reference_features(store, "efficientnet-lite0", "msfp9", x) for x in inputs]
    failures: list[str] = []
    answered = [0] * 4

    def worker(i: int) -> None:
        try:
            with device.client() as dev:
                for _ in range(5):
                    got = dev.infer(inputs[i]).features
                    if not np.allclose(got, expected[i], rtol=1e-5, atol=1e-6):
                        failures.append(f"client {i} got another client's result")
                    answered[i] += 1
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(f"client {i} failed: {exc!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures
    assert answered == [5, 5, 5, 5]


def test_kill9_restart_and_sigterm_removes_socket(store: ModelStore, sock_dir: Path) -> None:
    path = sock_dir / "fpga1.sock"
    first = start_device_process("fpga1", path, model_dir=store.root, flash_ms=10)
    try:
        client = FpgaDevice(path)
        client.load("efficientnet-lite0", "bfp8")
        session = open_accelerator(
            "fpga-emulator", "resnet50", "msfp9", store=store, device=str(path)
        )
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(30)
        assert path.exists()  # a hard kill leaves the socket file behind
        with pytest.raises(FpgaDeviceError):
            client.status()
        second = start_device_process("fpga1", path, model_dir=store.root, flash_ms=10)
        try:
            st = client.status()  # the same client reconnects to the new process
            assert st["pid"] == second.pid and st["model"] is None  # a fresh card is empty
            # an open featurizer session reconnects and flashes its model again by itself
            x = _batch(1, seed=3)
            np.testing.assert_allclose(
                session.featurize(x),
                reference_features(store, "resnet50", "msfp9", x),
                rtol=1e-5,
                atol=1e-6,
            )
            session.close()
            client.load("efficientnet-lite0", "bfp8")
            assert client.infer(_batch(1)).features.shape == (1, 24)
            # a second device on a live path is refused
            dup = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "composition.cli",
                    "fpga-emulator",
                    "serve",
                    "--socket",
                    str(path),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert dup.returncode != 0 and "already serves" in dup.stderr
            assert "Traceback" not in dup.stderr
            client.close()
            assert second.stop() == 0
            assert not path.exists()
        finally:
            second.stop()
    finally:
        first.stop()


def test_open_accelerator_starts_a_device_and_reports_device_latency(
    store: ModelStore, sock_dir: Path
) -> None:
    path = sock_dir / "fpga2.sock"
    session = open_accelerator(
        "fpga-emulator", "efficientnet-lite0", "msfp8", store=store, device=str(path)
    )
    try:
        assert path.exists() and session.notice and "started" in session.notice
        x = _batch(2, seed=9)
        out = session.featurize(x)
        np.testing.assert_allclose(
            out, reference_features(store, "efficientnet-lite0", "msfp8", x), rtol=1e-5, atol=1e-6
        )
        assert session.last_device_ms is not None and session.last_device_ms > 0
    finally:
        session.close()
    assert not path.exists()  # the session's own device went away with it


def test_cli_status_and_load_json(device: DeviceProcess) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "composition.cli",
                "fpga-emulator",
                *args,
                "--socket",
                str(device.path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    loaded = cli("load", "efficientnet-lite0", "--precision", "msfp9", "--json")
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout)["precision"] == "msfp9"
    status = cli("status", "--json")
    assert json.loads(status.stdout)["model"] == "efficientnet-lite0"
    refused = cli("load", "alexnet")
    assert refused.returncode == 1 and refused.stderr.startswith("error: ")
    assert "Traceback" not in refused.stderr


def test_session_reflashes_its_model_after_another_client_replaced_it(
    device: DeviceProcess, store: ModelStore
) -> None:
    session = open_accelerator(
        "fpga-emulator", "efficientnet-lite0", "msfp9", store=store, device=str(device.path)
    )
    try:
        assert session.notice is None  # the device was already running
        with device.client() as other:
            other.load("resnet50", "bfp8")
        x = _batch(1, seed=11)
        np.testing.assert_allclose(
            session.featurize(x),
            reference_features(store, "efficientnet-lite0", "msfp9", x),
            rtol=1e-5,
            atol=1e-6,
        )
        with device.client() as other:
            assert other.status()["model"] == "efficientnet-lite0"
    finally:
        session.close()
    with device.client() as dev:
        assert dev.ping()  # closing a session does not stop a device it did not start


def test_device_started_with_a_model_serves_it(store: ModelStore, sock_dir: Path) -> None:
    proc = start_device_process(
        "fpga3",
        sock_dir / "fpga3.sock",
        model_dir=store.root,
        flash_ms=300,
        load="resnet50",
        precision="bfp8",
    )
    try:
        with proc.client() as dev:
            x = _batch(2, seed=4)
            out = dev.infer(x)  # waits for the flash that started with the process
            assert out.model == "resnet50" and out.precision == "bfp8"
            np.testing.assert_allclose(
                out.features, reference_features(store, "resnet50", "bfp8", x), rtol=1e-5, atol=1e-6
            )
    finally:
        assert proc.stop() == 0


def test_bench_fpga_host_reports_ratios(store: ModelStore) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "composition.cli",
            "bench",
            "fpga-host",
            "--model",
            "resnet50",
            "--precision",
            "msfp8",
            "--iterations",
            "2",
            "--model-dir",
            str(store.root),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["quantized_layers"] == 3
    assert report["host_vs_fp32_batch1"]["cpu"] > 0 and report["host_vs_fp32_batch8"]["wall"] > 0


_SESSION_SCRIPT = """
import sys, time
from modules.accelerators.select import open_accelerator
session = open_accelerator(
    "fpga-emulator", "efficientnet-lite0", "bfp8", store=sys.argv[1], device=sys.argv[2]
)
print(session.notice, flush=True)
if sys.argv[3] == "hang":
    time.sleep(600)
"""  # never calls session.close()


def _wait_gone(path: Path, seconds: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not path.exists():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("ending", ["exit", "kill9"])
def test_a_device_started_for_a_session_does_not_outlive_its_process(
    store: ModelStore, sock_dir: Path, ending: str
) -> None:
    path = sock_dir / f"fpga-{ending}.sock"
    mode = "exit" if ending == "exit" else "hang"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SESSION_SCRIPT, str(store.root), str(path), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "started" in proc.stdout.readline()
        assert path.exists()
        if ending == "kill9":
            proc.kill()
        proc.wait(60)
        assert _wait_gone(path), "the session's device is still serving"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_a_corrupted_artifact_is_refused_and_the_loaded_model_stays(tmp_path: Path) -> None:
    from modules.accelerators.fpga.cycle_model import CardConfig
    from modules.accelerators.fpga.server import DeviceError, EmulatedCard

    store = tiny_store(tmp_path / "models")
    card = EmulatedCard("fpga5", store, CardConfig(flash_ms=0, flash_ms_per_mbyte=0))
    card.load("efficientnet-lite0", "bfp8")
    blob = store.featurizer_path("resnet50", verify=False)
    blob.write_bytes(blob.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DeviceError) as err:
        card.load("resnet50", "bfp8")
    assert err.value.code == "load_failed" and "corrupted" in str(err.value)
    assert card.status()["model"] == "efficientnet-lite0"
