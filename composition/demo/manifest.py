"""The deployment ``edgefleet demo`` sets: sensor + camera -> scoring, as ``type: process`` modules.

An IoT Edge deployment manifest (``modulesContent`` with ``$edgeAgent``, ``$edgeHub`` and each
module's ``properties.desired``). The modules run as ``<python> -m modules.<name>`` on the device.
"""

from __future__ import annotations

from typing import Any

from edgefleet.manifest import edge_deployment, process_module

MODEL = "efficientnet-lite0"
DEVICE_ID = "demo-edge"
SENSOR = "simulatedSensor"
CAMERA = "camera"
SCORING = "scoring"
MODULES = (SENSOR, CAMERA, SCORING)
DEPLOYMENT_ID = "camera-pipeline"
DEPLOYMENT_TAGS = {"pipeline": "camera"}

ROUTES = {
    "sensorToCloud": f"FROM /messages/modules/{SENSOR}/outputs/temperatureOutput INTO $upstream",
    "cameraToScoring": (
        f"FROM /messages/modules/{CAMERA}/outputs/frames "
        f'INTO BrokeredEndpoint("/modules/{SCORING}/inputs/frames")'
    ),
    "resultsToCloud": f"FROM /messages/modules/{SCORING}/outputs/results INTO $upstream",
}


def demo_manifest(
    python: str,
    model_dir: str,
    *,
    send_interval: float = 1.0,
    frame_interval: float = 2.0,
    accelerator: str = "cpu",
    precision: str = "fp32",
    fpga_device: str | None = None,
) -> dict[str, Any]:
    scoring_env = {
        "EDGEFLEET_MODEL_DIR": model_dir,
        "SCORING_ACCELERATOR": accelerator,
        "SCORING_PRECISION": precision,
    }
    if fpga_device:
        scoring_env["EDGEFLEET_FPGA_DEVICE"] = fpga_device

    def module_command(package: str) -> list[str]:
        return [python, "-m", f"modules.{package}"]

    deployment = edge_deployment(
        {
            SCORING: process_module(module_command("scoring"), startup_order=0, env=scoring_env),
            SENSOR: process_module(module_command("simulated_sensor"), startup_order=1),
            CAMERA: process_module(module_command("camera"), startup_order=1),
        },
        ROUTES,
    )
    deployment["modulesContent"].update(
        {
            SENSOR: {"properties.desired": {"SendInterval": send_interval}},
            CAMERA: {"properties.desired": {"FrameInterval": frame_interval}},
            SCORING: {"properties.desired": {"TopK": 5}},
        }
    )
    return deployment


def demo_configuration(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fleet deployment (IoT Hub configuration) of ``manifest`` for every device tagged
    with ``DEPLOYMENT_TAGS``."""
    condition = " AND ".join(f"tags.{key} = '{value}'" for key, value in DEPLOYMENT_TAGS.items())
    return {
        "id": DEPLOYMENT_ID,
        "content": manifest,
        "targetCondition": condition,
        "priority": 10,
        "labels": {"app": "edgefleet-demo"},
    }
