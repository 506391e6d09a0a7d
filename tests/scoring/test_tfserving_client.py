"""Azure ML's real PredictionClient (azureml-accel-models, in its own venv) against edgefleet serve:
h2c and TLS on the CPU, and on the FPGA emulator; plus tensorflow-serving-api's GetModelMetadata.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgefleet.ca import HubCA
from modules.accelerators.fpga.client import DeviceProcess, start_device_process
from tests.scoring.conftest import CATS, ESPRESSO, KEYS
from tests.support.hub import stop_process
from tests.support.scoring import ServeProcess, start_serve

VENV = Path(os.environ.get("EDGEFLEET_ACCEL_VENV", "/var/cache/edgefleet/venv-accel"))
CLIENT = Path(__file__).with_name("accel_client.py")
DT_STRING, DT_FLOAT = 7, 1


@pytest.fixture(scope="module")
def accel_python() -> Path:
    python = VENV / "bin" / "python"
    if not (VENV / ".edgefleet-ready").exists() or not python.exists():
        pytest.fail(
            f"the PredictionClient virtualenv is missing at {VENV}: run .ci/install "
            "(or scripts/accel-client-venv) once; it installs azureml-accel-models and "
            "tensorflow-serving-api there",
            pytrace=False,
        )
    return python


@dataclass
class GrpcServers:
    cpu: ServeProcess
    tls: ServeProcess
    ca_file: Path
    fpga: ServeProcess
    device: DeviceProcess


@pytest.fixture(scope="module")
def servers(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServers]:
    """Three ``edgefleet serve`` processes, started at once: CPU h2c, CPU TLS, FPGA emulator."""
    work = tmp_path_factory.mktemp("grpc")
    ca = HubCA(work / "ca").ensure(["localhost", "127.0.0.1"])
    sock_dir = Path(tempfile.mkdtemp(prefix="ef-serve-fpga-"))  # short: a UNIX socket path
    device = start_device_process(
        "fpga7", sock_dir / "fpga7.sock", model_dir=model_dir, flash_ms=20
    )
    tls = ["--tls-cert", str(ca.server_cert_file), "--tls-key", str(ca.server_key_file)]
    fpga = ["--accelerator", "fpga-emulator", "--device", str(device.path)]
    variants = [
        ["--keys", ",".join(KEYS)],
        ["--keys", KEYS[0], *tls],
        ["--keys", KEYS[1], *fpga],
    ]
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, sock_dir, ignore_errors=True)
        stack.callback(device.stop)
        with ThreadPoolExecutor(len(variants)) as pool:
            started = [pool.submit(start_serve, model_dir, work, *args) for args in variants]
            procs = [f.result() for f in started]
        for proc in procs:
            stack.callback(_stop, proc)
        yield GrpcServers(procs[0], procs[1], ca.ca_file, procs[2], device)


def _stop(proc: ServeProcess) -> None:
    assert stop_process(proc.process) == 0, proc.output()  # type: ignore[arg-type]


def _call(port: int | None, key: str, path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "call": "score_file",
        "address": "127.0.0.1",
        "port": port,
        "use_ssl": False,
        "key": key,
        "service": "edgefleet-test",
        "path": str(path),
        **extra,
    }


@pytest.fixture(scope="module")
def results(
    accel_python: Path, servers: GrpcServers, photos: dict[str, Path]
) -> dict[str, dict[str, Any]]:
    """Every client call in one run of the venv's Python (importing tensorflow takes seconds)."""
    server, tls, fpga, ca_file = servers.cpu, servers.tls, servers.fpga, servers.ca_file
    calls = {
        "cpu_chelsea": _call(server.grpc_port, KEYS[0], photos["chelsea.jpg"]),
        "cpu_coffee": _call(server.grpc_port, KEYS[1], photos["coffee.jpg"]),
        "cpu_coffee_png": _call(server.grpc_port, KEYS[0], photos["coffee.png"]),
        "cpu_wrong_key": _call(server.grpc_port, "not-a-key", photos["chelsea.jpg"]),
        "cpu_empty_key": _call(server.grpc_port, "", photos["chelsea.jpg"]),
        "cpu_not_an_image": _call(server.grpc_port, KEYS[0], CLIENT),
        "tls_chelsea": _call(
            tls.grpc_port, KEYS[0], photos["chelsea.jpg"], address="localhost", use_ssl=True
        ),
        "fpga_chelsea": _call(fpga.grpc_port, KEYS[1], photos["chelsea.jpg"]),
        "fpga_coffee": _call(fpga.grpc_port, KEYS[1], photos["coffee.jpg"]),
        "metadata": {
            "call": "metadata",
            "address": "127.0.0.1",
            "port": server.grpc_port,
            "key": KEYS[0],
        },
    }
    env = {**os.environ, "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(ca_file)}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [str(accel_python), str(CLIENT)],
        input=json.dumps(list(calls.values())),
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(zip(calls, json.loads(done.stdout.strip().splitlines()[-1]), strict=True))


def test_prediction_client_scores_photos_on_the_cpu(results: dict[str, dict[str, Any]]) -> None:
    chelsea = results["cpu_chelsea"]
    assert chelsea["ok"], chelsea
    assert chelsea["shape"] == [1000] and chelsea["dtype"] == "float32"  # batch dim removed
    assert chelsea["top5"][0] in CATS
    assert abs(chelsea["sum"] - 1.0) < 1e-3  # class probabilities
    assert results["cpu_coffee"]["top5"][0] == ESPRESSO
    assert results["cpu_coffee_png"]["top5"][0] == ESPRESSO


def test_prediction_client_over_tls_with_our_ca(results: dict[str, dict[str, Any]]) -> None:
    tls = results["tls_chelsea"]
    assert tls["ok"], tls
    assert tls["top5"][0] in CATS


def test_prediction_client_on_the_fpga_emulator(
    results: dict[str, dict[str, Any]], servers: GrpcServers
) -> None:
    assert results["fpga_chelsea"]["ok"], results["fpga_chelsea"]
    assert results["fpga_chelsea"]["top5"][0] in CATS
    assert results["fpga_coffee"]["top5"][0] in {ESPRESSO, 968}  # espresso or cup in bfp8
    with servers.device.client() as dev:  # the emulated card computed them
        status = dev.status()
    assert (status["model"], status["precision"]) == ("efficientnet-lite0", "bfp8")
    assert status["counters"]["images"] >= 2


def test_wrong_or_empty_key_is_unauthenticated(results: dict[str, dict[str, Any]]) -> None:
    for name in ("cpu_wrong_key", "cpu_empty_key"):
        refused = results[name]
        assert not refused["ok"] and refused["code"] == "UNAUTHENTICATED", refused
        assert "key" in refused["details"]
        # the client retries every code but INVALID_ARGUMENT (sleeps 1, 2, 4, 8 s; counted here)
        assert refused["retry_sleeps"] == [1, 2, 4, 8]


def test_not_an_image_is_invalid_argument_without_retries(
    results: dict[str, dict[str, Any]],
) -> None:
    bad = results["cpu_not_an_image"]
    assert not bad["ok"] and bad["code"] == "INVALID_ARGUMENT", bad
    assert "decodable" in bad["details"]
    assert bad["retry_sleeps"] == []


def test_get_model_metadata_with_tensorflow_serving_api(
    results: dict[str, dict[str, Any]],
) -> None:
    meta = results["metadata"]
    assert meta["ok"], meta
    assert meta["model"] == "efficientnet-lite0"
    assert meta["method"] == "tensorflow/serving/predict"
    assert meta["inputs"] == {"images": {"dtype": DT_STRING, "shape": [1]}}
    assert meta["outputs"]["scores"] == {"dtype": DT_FLOAT, "shape": [1, 1000]}
    assert meta["outputs"]["features"] == {"dtype": DT_FLOAT, "shape": [1, 1280]}
