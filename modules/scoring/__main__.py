"""``python -m modules.scoring``: frames on input ``frames`` -> top-5 JSON on output ``results``.

Env: ``SCORING_MODEL`` (efficientnet-lite0), ``SCORING_ACCELERATOR`` (cpu | gpu |
fpga-emulator), ``SCORING_PRECISION`` (fp32; bfp8 on the FPGA emulator), ``EDGEFLEET_FPGA_DEVICE``
(device path or name), ``EDGEFLEET_MODEL_DIR`` (model store), ``SCORING_TOP_K`` (5),
``SCORING_HTTP_PORT`` (serve ``POST /score`` and ``/v2`` when set), ``SCORING_GRPC_PORT`` (serve
TF-Serving gRPC when set; ``SCORING_TLS_CERT`` / ``SCORING_TLS_KEY`` for TLS), ``SCORING_HTTP_HOST``
(127.0.0.1, both front ends), ``SCORING_PRIMARY_KEY`` / ``SCORING_SECONDARY_KEY``,
``SCORING_WORKERS`` / ``SCORING_QUEUE`` / ``SCORING_MAX_IMAGE_BYTES`` (the pool and the image cap).
The network front ends are the same server as ``edgefleet serve`` (``modules.scoring.server``).
Twin desired ``TopK`` changes the number of classes sent.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import Any

from edgefleet.sdk.module_client import Message
from modules.module_runtime import ModuleRuntime, main_guard
from modules.scoring.core import ServingCore
from modules.scoring.detector import DetectorScorer, open_scoring_model
from modules.scoring.keys import Keys
from modules.scoring.scorer import Scorer, ScoringConfig
from modules.scoring.server import Servers, limits_from_env, listen_from_env

INPUT = "frames"
OUTPUT = "results"


def _open(config: ScoringConfig) -> Scorer | DetectorScorer:
    from modules.accelerators.model_store import StoreError
    from modules.accelerators.session import AcceleratorError

    try:
        return open_scoring_model(config)
    except (AcceleratorError, StoreError, ValueError) as exc:
        print(f"error: cannot open {config.model} on {config.accelerator}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def run() -> None:
    scorer = _open(ScoringConfig.from_env())
    listen = listen_from_env(os.environ)
    servers = None
    if listen.grpc_port is not None or listen.http_port is not None:
        core = ServingCore(scorer, Keys.from_env(), limits_from_env(os.environ))
        servers = Servers(core, listen)
    with ModuleRuntime("scoring") as rt:
        if servers is not None:
            rt.log.info("serving: gRPC port %s, HTTP port %s", servers.grpc_port, servers.http_port)

        def settings(desired: dict[str, Any]) -> None:
            if "TopK" in desired:
                scorer.config = replace(scorer.config, top_k=max(1, int(desired["TopK"])))

        def on_frame(message: Message) -> None:
            if message.input_name != INPUT:
                return
            frame = message.custom_properties.get("frameName", "")
            try:
                result = scorer.score(message.data)
            except ValueError as exc:
                rt.log.warning("frame %s not scored: %s", message.message_id, exc)
                return
            out = Message.from_body(
                {"frame": frame, "frameMessageId": message.message_id, **result},
                correlation_id=message.message_id,
            )
            if frame:
                out.custom_properties["frameName"] = frame
            rt.send(out, OUTPUT)

        rt.client.on_message_received = on_frame
        rt.on_settings(settings, lambda: {"TopK": scorer.config.top_k})
        rt.log.info(
            "scoring %s (%s) on %s",
            scorer.config.model,
            scorer.config.precision,
            scorer.session.engine,
        )
        rt.stopping.wait()
    if servers is not None:
        servers.stop()
    scorer.close()


if __name__ == "__main__":
    sys.exit(main_guard(run))
