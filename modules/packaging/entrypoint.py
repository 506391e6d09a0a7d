"""What a packaged image runs: ``edgefleet serve`` with the image's model, and (when the image
carries an Azure ML entry script) Azure ML's own HTTP server behind our key check.

Ports are fixed inside the container (gRPC 50051, HTTP 5001: the manifest's port bindings map
them); keys come from SCORING_PRIMARY_KEY / SCORING_SECONDARY_KEY; the FPGA emulator is used when
EDGEFLEET_FPGA_DEVICE names its socket. Runs with only the image's trimmed dependencies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
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
    args = ["serve", "--model", str(spec["model"])]
    if spec.get("head"):  # a detector's image ships none
        args += ["--head", str(spec["head"])]
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


def _watch(child: subprocess.Popen[bytes], died: threading.Event) -> None:
    """azmlinfsrv gone (score.py's init() failed, say): stop serving, so the container exits
    non-zero and the agent restarts it, instead of answering /score with 503 for ever."""
    code = child.wait()
    if not died.is_set():
        died.set()
        print(f"error: azmlinfsrv exited with {code}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    spec = json.loads(Path(PACKAGE_JSON).read_text())
    env = dict(os.environ)
    child: subprocess.Popen[bytes] | None = None
    died = threading.Event()
    if env.get("AZUREML_ENTRY_SCRIPT"):
        child = subprocess.Popen(azml_command(env["AZUREML_ENTRY_SCRIPT"]), env=azml_env(env))
        threading.Thread(target=_watch, args=(child, died), daemon=True).start()
    import modules.scoring.cli  # noqa: F401 - registers `serve`
    from edgefleet.cli_apps import app

    code = 0
    try:
        # not standalone: `serve`'s exit code comes back here instead of leaving at once
        result = app(args=serve_args(spec, env), prog_name="edgefleet", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    finally:
        if child is not None and child.poll() is None:
            died.set()  # our own stop, not a crash
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
    if died.is_set() and child is not None and child.returncode not in (0, -signal.SIGTERM):
        code = code or 1
    sys.exit(code)


if __name__ == "__main__":
    main()
