"""``python -m modules.scoring``: frames on input ``frames`` -> top-5 JSON on output ``results``.

Env: ``SCORING_MODEL`` (efficientnet-lite0), ``SCORING_ACCELERATOR`` (cpu | gpu |
fpga-emulator), ``SCORING_PRECISION`` (fp32; bfp8 on the FPGA emulator), ``EDGEFLEET_FPGA_DEVICE``
(device path or name), ``EDGEFLEET_MODEL_DIR`` (model store), ``SCORING_TOP_K`` (5),
``SCORING_HTTP_PORT`` (serve ``POST /score`` when set; ``SCORING_PRIMARY_KEY`` /
``SCORING_SECONDARY_KEY``). Twin desired ``TopK`` changes the number of classes sent.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import Any

from edgefleet.sdk.module_client import Message
from modules.module_runtime import ModuleRuntime, main_guard
from modules.scoring.scorer import Scorer, ScoringConfig

INPUT = "frames"
OUTPUT = "results"


def _open(config: ScoringConfig) -> Scorer:
    from modules.accelerators.model_store import StoreError
    from modules.accelerators.session import AcceleratorError

    try:
        return Scorer(config)
    except (AcceleratorError, StoreError) as exc:
        print(f"error: cannot open {config.model} on {config.accelerator}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def run() -> None:
    scorer = _open(ScoringConfig.from_env())
    server = None
    if os.environ.get("SCORING_HTTP_PORT"):
        from modules.scoring.http import ScoringServer

        keys = [
            os.environ.get("SCORING_PRIMARY_KEY", ""),
            os.environ.get("SCORING_SECONDARY_KEY", ""),
        ]
        host = os.environ.get("SCORING_HTTP_HOST", "127.0.0.1")
        server = ScoringServer(scorer, host, int(os.environ["SCORING_HTTP_PORT"]), keys)
        server.start()
    with ModuleRuntime("scoring") as rt:
        if server is not None:
            rt.log.info("POST /score on port %d", server.port)

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
    if server is not None:
        server.stop()
    scorer.close()


if __name__ == "__main__":
    sys.exit(main_guard(run))
