"""How a container reaches the edge hub's workload API: the directory of its unix socket is
mounted at IoT Edge's place for it, and ``IOTEDGE_WORKLOADURI`` names the socket there."""

from __future__ import annotations

from pathlib import PurePosixPath

CONTAINER_DIR = "/var/run/iotedge"


def container_workload(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The container's env and the bind mounts (``host:container``) it needs for the socket."""
    uri = env.get("IOTEDGE_WORKLOADURI", "")
    if not uri.startswith("unix://"):
        return env, []
    socket = PurePosixPath(uri.removeprefix("unix://"))
    out = dict(env)
    out["IOTEDGE_WORKLOADURI"] = f"unix://{CONTAINER_DIR}/{socket.name}"
    return out, [f"{socket.parent}:{CONTAINER_DIR}"]
