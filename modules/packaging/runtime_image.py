"""The runtime images a scoring image is built on: the Debian base, + serving wheels, + azmlinfsrv.

Each is made once and kept under a stable local tag (named by what it holds), so packaging a model
sends only code and model files to docker. ``python -m modules.packaging.runtime_image`` makes
them ahead of time (``.ci/install`` does) and prints how long each step took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from modules.packaging import docker_ops
from modules.packaging.base_image import ensure_base_image
from modules.packaging.context import (
    AZML_REQUIREMENTS,
    RUNTIME_REQUIREMENTS,
    assemble_runtime,
    build_dir,
    runtime_tag,
)


def ensure_runtime(
    client: Any, with_azml: bool, say: Callable[[str], None] = lambda _m: None
) -> tuple[str, str]:
    """(base tag, runtime tag); missing layers are built."""
    runtime = base = ensure_base_image(say)
    layers = [RUNTIME_REQUIREMENTS] + ([AZML_REQUIREMENTS] if with_azml else [])
    for requirements in layers:
        parent, runtime = runtime, runtime_tag(runtime, requirements)
        if not docker_ops.image_exists(client, runtime):
            with build_dir() as ctx:
                assemble_runtime(ctx, parent, requirements, say)
                docker_ops.build_image(client, ctx, runtime, say)
    return base, runtime


def main() -> None:
    started = time.monotonic()
    client = docker_ops.docker_client()
    base, runtime = ensure_runtime(client, True, print)
    seconds = time.monotonic() - started
    size = docker_ops.image_size(client, runtime) / 1e6
    print(f"runtime images ready in {seconds:.0f} s: {base}, {runtime} ({size:.0f} MB)")


if __name__ == "__main__":
    main()
