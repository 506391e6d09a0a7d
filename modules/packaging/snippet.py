"""The deployment-manifest snippet for a packaged image (IoT Edge ``$edgeAgent`` shapes)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from modules.packaging.context import GRPC_PORT, HTTP_PORT

FPGA_DIR_IN_CONTAINER = "/run/edgefleet-fpga"


def credential_name(registry: str) -> str:
    """A registryCredentials key for a registry address (letters, digits, dashes)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", registry).strip("-") or "registry"


# Docker's request for every NVIDIA GPU (what `docker run --gpus all` sends)
GPU_DEVICE_REQUEST = {"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}


def create_options(
    grpc_host_port: int, http_host_port: int, fpga_socket: Path | None, gpu: bool = False
) -> dict[str, Any]:
    """Port bindings, the FPGA emulator's socket directory mapped in, or the GPUs asked for.

    The Data Box Edge sample maps the card (``/dev/catapult0``) into the container; the emulated
    card is a unix socket, whose directory is bound (not the socket file itself, so a restarted
    device's new socket is seen) and named by EDGEFLEET_FPGA_DEVICE.
    """
    host_config: dict[str, Any] = {
        "PortBindings": {
            f"{GRPC_PORT}/tcp": [{"HostPort": str(grpc_host_port)}],
            f"{HTTP_PORT}/tcp": [{"HostPort": str(http_host_port)}],
        }
    }
    options: dict[str, Any] = {
        "ExposedPorts": {f"{GRPC_PORT}/tcp": {}, f"{HTTP_PORT}/tcp": {}},
        "HostConfig": host_config,
    }
    if fpga_socket is not None:
        host_config["Binds"] = [f"{fpga_socket.parent}:{FPGA_DIR_IN_CONTAINER}"]
    if gpu:
        host_config["DeviceRequests"] = [dict(GPU_DEVICE_REQUEST)]
    return options


def module_env(fpga_socket: Path | None) -> dict[str, dict[str, str]]:
    env = {
        "SCORING_PRIMARY_KEY": {"value": "${SCORING_PRIMARY_KEY}"},
        "SCORING_SECONDARY_KEY": {"value": "${SCORING_SECONDARY_KEY}"},
    }
    if fpga_socket is not None:
        env["EDGEFLEET_FPGA_DEVICE"] = {"value": f"{FPGA_DIR_IN_CONTAINER}/{fpga_socket.name}"}
    return env


def manifest_snippet(
    image: str,
    registry: str,
    user: str | None,
    *,
    module: str = "scoring",
    grpc_host_port: int = GRPC_PORT,
    http_host_port: int = HTTP_PORT,
    fpga_socket: Path | None = None,
    gpu: bool = False,
) -> dict[str, Any]:
    """``$edgeAgent`` desired-properties fragments: registryCredentials and the module."""
    snippet: dict[str, Any] = {
        "modules": {
            module: {
                "type": "docker",
                "version": "1.0",
                "status": "running",
                "restartPolicy": "always",
                "settings": {
                    "image": image,
                    "createOptions": json.dumps(
                        create_options(grpc_host_port, http_host_port, fpga_socket, gpu),
                        separators=(",", ":"),
                    ),
                },
                "env": module_env(fpga_socket),
            }
        }
    }
    if registry:
        snippet["runtime"] = {
            "type": "docker",
            "settings": {
                "registryCredentials": {
                    credential_name(registry): {
                        "address": registry,
                        "username": user or "${REGISTRY_USERNAME}",
                        "password": "${REGISTRY_PASSWORD}",
                    }
                }
            },
        }
    return snippet
