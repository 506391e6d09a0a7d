"""The runtime images a scoring image is built on: the Debian base, + serving wheels, + azmlinfsrv,
+ the entry script's own packages.

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
    Layer,
    assemble_runtime,
    build_dir,
    runtime_tag,
    site_tree,
)
from modules.packaging.requirements import (
    constraint_lines,
    runtime_pins,
    runtime_requirements,
    split_against_runtime,
)


def runtime_layers(accelerator: str, with_azml: bool) -> list[Layer]:
    serving = Layer("site", runtime_requirements(accelerator), flavour=f"{accelerator}-")
    if accelerator == "cpu":  # the tags the cpu runtime has always had
        serving = Layer("site", serving.requirements)
    return [serving] + ([Layer("azml", AZML_REQUIREMENTS)] if with_azml else [])


def user_layer(
    below: list[Layer],
    requirements: tuple[str, ...],
    say: Callable[[str], None],
    note: Callable[[str], None],
) -> Layer | None:
    """The entry script's layer: what the runtime lacks, its dependencies held to the
    runtime's versions; None when the runtime already has everything asked for."""
    pins = runtime_pins(site_tree(layer.requirements, say) for layer in below)
    install, notices = split_against_runtime(requirements, pins)
    for notice in notices:
        note(notice)
    return Layer("user", install, constraint_lines(pins)) if install else None


def ensure_runtime(
    client: Any,
    with_azml: bool,
    say: Callable[[str], None] = lambda _m: None,
    *,
    accelerator: str = "cpu",
    requirements: tuple[str, ...] = (),
    note: Callable[[str], None] | None = None,
) -> tuple[str, str]:
    """(base tag, runtime tag); missing layers are built. ``note``: what the user should read
    afterwards (``say`` is transient progress)."""
    runtime = base = ensure_base_image(say)
    layers = runtime_layers(accelerator, with_azml)
    if requirements:
        extra = user_layer(layers, requirements, say, note or say)
        layers += [extra] if extra else []
    for layer in layers:
        parent, runtime = runtime, runtime_tag(runtime, layer)
        if not docker_ops.image_exists(client, runtime):
            with build_dir() as ctx:
                assemble_runtime(ctx, parent, layer, say)
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
