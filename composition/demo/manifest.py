"""The deployment ``edgefleet demo`` sets: sensor + camera -> scoring, as ``type: process`` modules.

An IoT Edge deployment manifest (``modulesContent`` with ``$edgeAgent``, ``$edgeHub`` and each
module's ``properties.desired``). The modules run as ``<python> -m modules.<name>`` on the device.
"""

from __future__ import annotations

from typing import Any

MODEL = "efficientnet-lite0"
DEVICE_ID = "demo-edge"
SENSOR = "simulatedSensor"
CAMERA = "camera"
SCORING = "scoring"
MODULES = (SENSOR, CAMERA, SCORING)

ROUTES = {
    "sensorToCloud": f"FROM /messages/modules/{SENSOR}/outputs/temperatureOutput INTO $upstream",
    "cameraToScoring": (
        f"FROM /messages/modules/{CAMERA}/outputs/frames "
        f'INTO BrokeredEndpoint("/modules/{SCORING}/inputs/frames")'
    ),
    "resultsToCloud": f"FROM /messages/modules/{SCORING}/outputs/results INTO $upstream",
}


def _process_module(
    python: str, package: str, order: int, env: dict[str, str] | None = None
) -> dict[str, Any]:
    module: dict[str, Any] = {
        "version": "1.0",
        "type": "process",
        "status": "running",
        "restartPolicy": "always",
        "startupOrder": order,
        "settings": {"command": [python, "-m", package]},
    }
    if env:
        module["env"] = {key: {"value": value} for key, value in env.items()}
    return module


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
    return {
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "runtime": {"type": "docker", "settings": {"registryCredentials": {}}},
                    "systemModules": {
                        "edgeAgent": {"type": "docker", "settings": {"image": "edgefleet/agent"}},
                        "edgeHub": {
                            "type": "docker",
                            "status": "running",
                            "restartPolicy": "always",
                            "settings": {"image": "edgefleet/hub"},
                        },
                    },
                    "modules": {
                        SCORING: _process_module(python, "modules.scoring", 0, scoring_env),
                        SENSOR: _process_module(python, "modules.simulated_sensor", 1),
                        CAMERA: _process_module(python, "modules.camera", 1),
                    },
                }
            },
            "$edgeHub": {
                "properties.desired": {
                    "schemaVersion": "1.2",
                    "routes": ROUTES,
                    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
                }
            },
            SENSOR: {"properties.desired": {"SendInterval": send_interval}},
            CAMERA: {"properties.desired": {"FrameInterval": frame_interval}},
            SCORING: {"properties.desired": {"TopK": 5}},
        }
    }
