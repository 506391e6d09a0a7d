"""What a packaged image runs: ``edgefleet serve`` with the image's model, and (when the image
carries an Azure ML entry script) Azure ML's own HTTP server behind our key check.

Ports are fixed inside the container (gRPC 50051, HTTP 5001: the manifest's port bindings map
them); keys come from SCORING_PRIMARY_KEY / SCORING_SECONDARY_KEY; the FPGA emulator is used when
EDGEFLEET_FPGA_DEVICE names its socket. Runs with only the image's trimmed dependencies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PACKAGE_JSON = "/opt/edgefleet/package.json"
AZML_TREE = "/opt/edgefleet/azml"
AZML_PORT = 5002  # azmlinfsrv inside the container; only our front end on 5001 reaches it


def serve_args(spec: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """The ``edgefleet serve`` arguments for the image's model in this environment."""
    device = env.get("EDGEFLEET_FPGA_DEVICE") or ""
    accelerator = env.get("SCORING_ACCELERATOR") or ("fpga-emulator" if device else "cpu")
    args = ["serve", "--model", str(spec["model"]), "--head", str(spec["head"])]
    args += ["--accelerator", accelerator, "--host", env.get("SCORING_HTTP_HOST", "0.0.0.0")]
    args += ["--grpc-port", "50051", "--http-port", "5001"]
    precision = env.get("SCORING_PRECISION") or (
        None if accelerator == "fpga-emulator" else str(spec["precision"])
    )
    if precision:
        args += ["--precision", precision]
    if accelerator == "fpga-emulator" and device:
        args += ["--device", device]
    if env.get("AZUREML_ENTRY_SCRIPT"):
        args += ["--score-upstream", f"http://127.0.0.1:{AZML_PORT}"]
    return args


def azml_command(entry_script: str) -> list[str]:
    run = "from azureml_inference_server_http.amlserver import run; sys.exit(run())"
    return [sys.executable, "-c", f"import sys; {run}", "--entry_script", entry_script,
            "--port", str(AZML_PORT)]  # fmt: skip


def azml_env(env: Mapping[str, str]) -> dict[str, str]:
    """azmlinfsrv's tree first (its pinned flask etc.), then the serving tree for score.py."""
    return {**env, "PYTHONPATH": f"{AZML_TREE}:{env.get('PYTHONPATH', '')}".rstrip(":")}


def main() -> None:
    spec = json.loads(Path(PACKAGE_JSON).read_text())
    env = dict(os.environ)
    child: subprocess.Popen[bytes] | None = None
    if env.get("AZUREML_ENTRY_SCRIPT"):
        child = subprocess.Popen(azml_command(env["AZUREML_ENTRY_SCRIPT"]), env=azml_env(env))
    import modules.scoring.cli  # noqa: F401 - registers `serve`
    from edgefleet.cli_apps import app

    try:
        app(args=serve_args(spec, env), prog_name="edgefleet")
    finally:
        if child is not None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    main()
