"""The shipped modules as real processes against a real edge hub (routes, local broker)."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from edgefleet.protocol import Message
from modules.simulated_sensor.__main__ import SensorSettings
from tests.support.edgehub import edge_hub
from tests.support.featurizer_models import copied_test_store
from tests.support.hub import free_port
from tests.support.modules import Sink, start_module, stop_module

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copied_test_store(tmp_path_factory.mktemp("models") / "store")


def _log(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def test_simulated_sensor_sends_json_telemetry_and_stops_on_sigterm(tmp_path: Path) -> None:
    routes = {
        "r": "FROM /messages/modules/sensor/outputs/temperatureOutput "
        'INTO BrokeredEndpoint("/modules/sink/inputs/telemetry")'
    }
    with edge_hub(tmp_path, None, {"routes": routes}) as hub:
        sink = Sink(hub)
        proc = start_module(hub, "sensor", "modules.simulated_sensor", tmp_path, SendInterval="0.1")
        try:
            msgs = sink.wait(lambda m: len(m) >= 3)
        finally:
            code = stop_module(proc)
            sink.close()
    assert code == 0, _log(tmp_path, "sensor")
    first = msgs[0]
    assert first.input_name == "telemetry"
    assert first.content_type == "application/json" and first.content_encoding == "utf-8"
    body = json.loads(first.data)
    assert set(body) == {"machine", "ambient", "timeCreated"}
    assert 0 <= body["ambient"]["humidity"] <= 100
    temps = [json.loads(m.data)["machine"]["temperature"] for m in msgs[:3]]
    assert temps == sorted(temps)  # the machine heats up


def test_sensor_keeps_sending_after_the_edge_hub_restarts(tmp_path: Path) -> None:
    routes = {
        "r": 'FROM /messages/modules/sensor/* INTO BrokeredEndpoint("/modules/sink/inputs/t")'
    }
    port = free_port()
    with edge_hub(tmp_path, None, {"routes": routes}, port=port) as hub:
        sink = Sink(hub)
        proc = start_module(hub, "sensor", "modules.simulated_sensor", tmp_path, SendInterval="0.1")
        try:
            sink.wait(lambda m: len(m) >= 2)
        finally:
            sink.close()
    try:
        assert proc.poll() is None, _log(tmp_path, "sensor")  # the hub is gone; the module waits
        with edge_hub(tmp_path, None, {"routes": routes}, port=port) as hub:
            restarted = datetime.now(UTC)
            sink = Sink(hub)
            try:
                msgs = sink.wait(lambda m: len(_created_after(m, restarted)) >= 2)
            finally:
                sink.close()
                code = stop_module(proc)
    finally:
        stop_module(proc)
    assert code == 0, _log(tmp_path, "sensor")
    assert all(json.loads(m.data)["machine"]["temperature"] > 0 for m in msgs)


def _created_after(msgs: list[Message], when: datetime) -> list[Message]:
    """Readings the sensor made after ``when`` (not replays of stored ones)."""
    return [
        m
        for m in msgs
        if datetime.fromisoformat(json.loads(m.data)["timeCreated"].replace("Z", "+00:00")) > when
    ]


def test_sensor_settings_follow_twin_desired_properties() -> None:
    settings = SensorSettings()
    settings.apply({"SendInterval": 0.5, "SendData": False})
    assert (settings.interval, settings.send_data) == (0.5, False)
    with pytest.raises(ValueError):
        settings.apply({"SendInterval": "fast"})


def test_sensor_stops_after_message_count(tmp_path: Path) -> None:
    routes = {
        "r": 'FROM /messages/modules/sensor/* INTO BrokeredEndpoint("/modules/sink/inputs/t")'
    }
    with edge_hub(tmp_path, None, {"routes": routes}) as hub:
        sink = Sink(hub)
        proc = start_module(
            hub,
            "sensor",
            "modules.simulated_sensor",
            tmp_path,
            SendInterval="0.05",
            MessageCount="4",
        )
        try:
            assert proc.wait(60) == 0, _log(tmp_path, "sensor")
            assert len(sink.wait(lambda m: len(m) >= 4)) == 4
        finally:
            stop_module(proc)
            sink.close()


@pytest.fixture
def pipeline(tmp_path: Path, model_dir: Path) -> Iterator[tuple[Sink, dict[str, int]]]:
    """camera -> scoring -> sink, as the demo deploys them."""
    routes = {
        "frames": "FROM /messages/modules/camera/outputs/frames "
        'INTO BrokeredEndpoint("/modules/scoring/inputs/frames")',
        "results": "FROM /messages/modules/scoring/outputs/results "
        'INTO BrokeredEndpoint("/modules/sink/inputs/results")',
    }
    port, grpc_port = free_port(), free_port()
    with edge_hub(tmp_path, None, {"routes": routes}) as hub:
        sink = Sink(hub)
        scoring = start_module(
            hub,
            "scoring",
            "modules.scoring",
            tmp_path,
            EDGEFLEET_MODEL_DIR=str(model_dir),
            SCORING_HTTP_PORT=str(port),
            SCORING_GRPC_PORT=str(grpc_port),
            SCORING_PRIMARY_KEY="key-one",
            SCORING_SECONDARY_KEY="key-two",
        )
        camera = start_module(
            hub,
            "camera",
            "modules.camera",
            tmp_path,
            FRAME_INTERVAL="0.3",
            CAMERA_IMAGES="chelsea,coffee",
        )
        procs: list[subprocess.Popen[bytes]] = [camera, scoring]
        try:
            yield sink, {"http_port": port, "grpc_port": grpc_port}
        finally:
            codes = [stop_module(p) for p in procs]
            sink.close()
        assert codes == [0, 0], _log(tmp_path, "scoring") + _log(tmp_path, "camera")


def _results(msgs: list[Message]) -> dict[str, dict[str, object]]:
    return {json.loads(m.data)["frame"]: json.loads(m.data) for m in msgs}


def test_camera_frames_are_scored_into_top5_results(
    pipeline: tuple[Sink, dict[str, int]],
) -> None:
    sink, _ = pipeline
    msgs = sink.wait(lambda m: {"chelsea", "coffee"} <= set(_results(m)), timeout=90)
    results = _results(msgs)
    chelsea = results["chelsea"]
    top5 = chelsea["top5"]
    assert isinstance(top5, list) and len(top5) == 5
    assert top5[0]["class_id"] in CAT_CLASSES and "cat" in top5[0]["label"]
    assert results["coffee"]["top5"][0]["class_id"] == ESPRESSO  # type: ignore[index]
    assert chelsea["accelerator"] == "cpu" and chelsea["model"] == "efficientnet-lite0"
    for msg in msgs:
        assert msg.content_type == "application/json"
        assert msg.correlation_id == json.loads(msg.data)["frameMessageId"]


def test_score_http_endpoint_needs_a_bearer_key(pipeline: tuple[Sink, dict[str, int]]) -> None:
    from modules.camera.frames import jpeg_frame

    sink, info = pipeline
    sink.wait(lambda m: len(m) >= 1, timeout=90)  # the scorer is up
    url = f"http://127.0.0.1:{info['http_port']}/score"
    image = jpeg_frame("chelsea")
    headers = {"Content-Type": "image/jpeg"}
    assert httpx.post(url, content=image, headers=headers, timeout=60).status_code == 401
    bad = {**headers, "Authorization": "Bearer nope"}
    assert httpx.post(url, content=image, headers=bad, timeout=60).status_code == 401
    ok = httpx.post(
        url, content=image, headers={**headers, "Authorization": "Bearer key-two"}, timeout=60
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["top5"][0]["class_id"] in CAT_CLASSES
    as_json = httpx.post(
        url,
        json={"image": base64.b64encode(image).decode()},
        headers={"Authorization": "Bearer key-one"},
        timeout=60,
    )
    assert as_json.status_code == 200 and as_json.json()["top5"][0]["class_id"] in CAT_CLASSES
    garbage = httpx.post(
        url,
        content=b"not an image",
        headers={**headers, "Authorization": "Bearer key-one"},
        timeout=60,
    )
    assert garbage.status_code == 400 and "decodable" in garbage.json()["message"]


def test_scoring_module_serves_tf_serving_grpc_too(pipeline: tuple[Sink, dict[str, int]]) -> None:
    import grpc
    import numpy as np

    from modules.camera.frames import jpeg_frame
    from modules.scoring.tfserving import predict_pb2, prediction_service_pb2_grpc, types_pb2

    sink, info = pipeline
    sink.wait(lambda m: len(m) >= 1, timeout=90)  # the scorer is up
    request = predict_pb2.PredictRequest()
    request.inputs["images"].dtype = types_pb2.DT_STRING
    request.inputs["images"].tensor_shape.dim.add(size=1)
    request.inputs["images"].string_val.append(jpeg_frame("coffee"))
    with grpc.insecure_channel(f"127.0.0.1:{info['grpc_port']}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=60, metadata=[("authorization", "Bearer key-one")])
    scores = np.frombuffer(response.outputs["scores"].tensor_content, dtype="<f4")
    assert int(scores.argmax()) == ESPRESSO


def test_scoring_survives_frames_that_are_not_images(tmp_path: Path, model_dir: Path) -> None:
    from modules.camera.frames import jpeg_frame

    routes = {
        "in": "FROM /messages/modules/feeder/outputs/* "
        'INTO BrokeredEndpoint("/modules/scoring/inputs/frames")',
        "out": "FROM /messages/modules/scoring/outputs/results "
        'INTO BrokeredEndpoint("/modules/sink/inputs/results")',
    }

    def frame(body: bytes, name: str) -> Message:
        msg = Message(data=body, content_type="image/jpeg")
        msg.custom_properties["frameName"] = name
        return msg

    with edge_hub(tmp_path, None, {"routes": routes}) as hub:
        sink = Sink(hub)
        feeder = Sink(hub, "feeder")
        scoring = start_module(
            hub, "scoring", "modules.scoring", tmp_path, EDGEFLEET_MODEL_DIR=str(model_dir)
        )
        try:
            # frames sent before the scorer subscribed reach nobody: resend until one is scored
            for _ in range(60):
                feeder.client.send_message_to_output(frame(jpeg_frame("coffee"), "coffee"), "f")
                try:
                    sink.wait(lambda m: len(m) >= 1, timeout=2)
                    break
                except AssertionError:
                    continue
            for body, name in ((b"\x00garbage", "garbage"), (b"", "empty")):
                feeder.client.send_message_to_output(frame(body, name), "f")
            feeder.client.send_message_to_output(frame(jpeg_frame("chelsea"), "chelsea"), "f")
            msgs = sink.wait(lambda m: "chelsea" in _results(m), timeout=60)
            assert scoring.poll() is None, _log(tmp_path, "scoring")
            results = _results(msgs)
            assert set(results) == {"coffee", "chelsea"}
            assert results["chelsea"]["top5"][0]["class_id"] in CAT_CLASSES  # type: ignore[index]
        finally:
            code = stop_module(scoring)
            feeder.close()
            sink.close()
    assert code == 0
    assert _log(tmp_path, "scoring").count("not scored") == 2


def test_scoring_on_the_fpga_emulator_reports_device_latency(
    tmp_path: Path, model_dir: Path
) -> None:
    """The device path comes from the environment, as a mapped /dev/catapult0 would."""
    routes = {
        "in": "FROM /messages/modules/camera/outputs/frames "
        'INTO BrokeredEndpoint("/modules/scoring/inputs/frames")',
        "out": "FROM /messages/modules/scoring/outputs/results "
        'INTO BrokeredEndpoint("/modules/sink/inputs/results")',
    }
    socket = tmp_path / "fpga0.sock"
    with edge_hub(tmp_path, None, {"routes": routes}) as hub:
        sink = Sink(hub)
        env = {
            "EDGEFLEET_MODEL_DIR": str(model_dir),
            "SCORING_ACCELERATOR": "fpga-emulator",
            "EDGEFLEET_FPGA_DEVICE": str(socket),
        }
        scoring = start_module(hub, "scoring", "modules.scoring", tmp_path, **env)
        camera = start_module(
            hub, "camera", "modules.camera", tmp_path, FRAME_INTERVAL="0.5", CAMERA_IMAGES="chelsea"
        )
        try:
            msgs = sink.wait(lambda m: len(m) >= 1, timeout=120)
        finally:
            codes = [stop_module(camera), stop_module(scoring)]
            sink.close()
    assert codes == [0, 0], _log(tmp_path, "scoring")
    result = json.loads(msgs[0].data)
    assert result["accelerator"] == "fpga-emulator" and result["precision"] == "bfp8"
    assert result["deviceMs"] > 0
    assert result["top5"][0]["class_id"] in CAT_CLASSES
    assert not socket.exists()  # the card the module started stopped with it
