"""The FPGA emulator's device restarting under a running scorer: calls in between fail with a
clear 503 / UNAVAILABLE, and the next call after the device is back works (the featurizer
session reconnects and flashes its model again by itself)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import grpc
import httpx

from modules.accelerators.fpga.client import start_device_process
from modules.scoring.tfserving import predict_pb2, prediction_service_pb2_grpc
from modules.scoring.tfserving.tensor_pb2 import TensorProto
from modules.scoring.tfserving.types_pb2 import DT_STRING
from tests.scoring.conftest import CATS, KEYS
from tests.support.scoring import serving


def _predict(target: str, image: bytes) -> grpc.StatusCode:
    request = predict_pb2.PredictRequest()
    request.inputs["images"].CopyFrom(
        TensorProto(dtype=DT_STRING, string_val=[image], tensor_shape={"dim": [{"size": 1}]})
    )
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            stub.Predict(request, metadata=[("authorization", f"Bearer {KEYS[0]}")], timeout=60)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_calls_fail_clearly_while_the_device_restarts_and_work_when_it_is_back(
    model_dir: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    sock_dir = Path(tempfile.mkdtemp(prefix="ef-fpga-rs-"))  # short: a UNIX socket path
    path = sock_dir / "fpga9.sock"
    device = start_device_process("fpga9", path, model_dir=model_dir, flash_ms=20)
    chelsea = photos["chelsea.jpg"].read_bytes()
    headers = {"Authorization": f"Bearer {KEYS[0]}", "Content-Type": "image/jpeg"}
    fpga = ["--accelerator", "fpga-emulator", "--device", str(path)]
    try:
        with serving(model_dir, tmp_path, "--keys", KEYS[0], *fpga) as server:

            def score() -> httpx.Response:
                url = server.http_url + "/score"
                return httpx.post(url, content=chelsea, headers=headers, timeout=60)

            first = score()
            assert first.status_code == 200, first.text
            assert first.json()["top5"][0]["class_id"] in CATS

            os.kill(device.pid, signal.SIGKILL)
            device.proc.wait(30)
            down = score()
            assert down.status_code == 503, down.text
            assert "the accelerator is unavailable" in down.json()["message"]
            assert _predict(server.grpc_target, chelsea) == grpc.StatusCode.UNAVAILABLE

            device = start_device_process("fpga9", path, model_dir=model_dir, flash_ms=20)
            again = score()
            assert again.status_code == 200, again.text
            assert again.json()["top5"][0]["class_id"] in CATS
            assert _predict(server.grpc_target, chelsea) == grpc.StatusCode.OK
        assert "Traceback" not in server.output()
    finally:
        device.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
