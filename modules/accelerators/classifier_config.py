"""Which classifier a module runs (model, accelerator, precision, ...) from its environment, and
opening it: the featurizer session on that accelerator plus the classifier head."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from modules.accelerators.classify import ImageClassifier

DEFAULT_MODEL = "efficientnet-lite0"


@dataclass(frozen=True)
class ClassifierConfig:
    model: str = DEFAULT_MODEL
    accelerator: str = "cpu"
    precision: str = "fp32"
    device: str | None = None  # FPGA emulator device path or name
    model_dir: str | None = None  # default: the model store's default root
    head: str = "default"
    threads: int | None = None  # default: physical cores

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClassifierConfig:
        """``SCORING_MODEL``, ``SCORING_ACCELERATOR``, ``SCORING_PRECISION`` (fp32; bfp8 on the
        FPGA emulator), ``EDGEFLEET_FPGA_DEVICE``, ``EDGEFLEET_MODEL_DIR``, ``SCORING_HEAD``."""
        env = os.environ if env is None else env
        accelerator = env.get("SCORING_ACCELERATOR", "cpu")
        default_precision = "bfp8" if accelerator == "fpga-emulator" else "fp32"
        return cls(
            model=env.get("SCORING_MODEL", DEFAULT_MODEL),
            accelerator=accelerator,
            precision=env.get("SCORING_PRECISION", default_precision),
            device=env.get("EDGEFLEET_FPGA_DEVICE") or None,
            model_dir=env.get("EDGEFLEET_MODEL_DIR") or None,
            head=env.get("SCORING_HEAD", "default"),
        )


def open_classifier(config: ClassifierConfig) -> ImageClassifier:
    """The classifier; its ``featurizer`` session is the caller's to close."""
    from modules.accelerators.model_store import ModelStore
    from modules.accelerators.select import open_accelerator

    store = ModelStore(config.model_dir)
    session = open_accelerator(
        config.accelerator,
        config.model,
        config.precision,
        store=store,
        device=config.device,
        threads=config.threads,
    )
    try:
        return ImageClassifier(session, store, config.head)
    except Exception:
        session.close()
        raise
