"""The model store: content-addressed ONNX artifacts plus one JSON manifest per model.

Layout under the store root (``default_model_dir()``)::

    blobs/<sha256>.<ext>        every artifact, named by the sha256 of its bytes
    manifests/<name>.json       one ``ModelManifest`` per model (the current version)

A manifest names its artifacts by path (relative to the root) and sha256, so a reader can check
integrity before loading (``ModelStore.artifact_path(..., verify=True)``). Artifacts are immutable;
rebuilding a model writes new blobs and atomically replaces the manifest.

Featurizer precisions are keys of ``ModelManifest.featurizer`` (``fp32``, ``int8``, ``fp16``; the
FPGA emulator derives its block-floating-point variants from ``fp32``). Heads are keys of
``ModelManifest.heads`` (``default`` is the ImageNet classifier; ``edgefleet models train-head``
adds others).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, computed_field

from edgefleet.files import atomic_write_text

MODEL_DIR_ENV = "EDGEFLEET_MODEL_DIR"
DATA_DIR_ENV = "EDGEFLEET_DATA_DIR"
SCHEMA_VERSION = 1
IMAGENET_LABELS = "builtin:imagenet-1k"


class StoreError(Exception):
    """A model or artifact is missing or unusable."""


class ModelNotFoundError(StoreError):
    pass


class IntegrityError(StoreError):
    """An artifact's bytes do not match the sha256 its manifest records."""


def default_model_dir() -> Path:
    """``$EDGEFLEET_MODEL_DIR``, else ``$EDGEFLEET_DATA_DIR/models``, else the XDG data dir."""
    if os.environ.get(MODEL_DIR_ENV):
        return Path(os.environ[MODEL_DIR_ENV]).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser() / "models"
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "edgefleet" / "models"


class TensorSpec(BaseModel):
    name: str
    shape: list[int | str]  # a str is a symbolic dimension ("batch")
    dtype: str = "float32"


class Preprocessing(BaseModel):
    """How to turn an image into the featurizer's input (see ``preprocess.py``)."""

    resize_short_side: int = 256
    crop: int = 224
    scale: float = 1.0 / 255.0  # applied to uint8 pixels before mean/std
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    interpolation: Literal["area", "linear", "cubic"] = "linear"  # enlarging; shrinking uses area


class Artifact(BaseModel):
    file: str  # relative to the store root
    sha256: str
    size: int


class Head(BaseModel):
    artifact: Artifact
    input: TensorSpec
    output: TensorSpec  # logits, shape [batch, num_classes]
    num_classes: int
    labels: str = IMAGENET_LABELS  # "builtin:imagenet-1k" or "inline"
    label_names: list[str] | None = None  # when labels == "inline"
    synthetic_weights: bool = False
    description: str = ""


class ModelManifest(BaseModel):
    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    architecture: str
    description: str = ""
    synthetic_weights: bool
    weights_source: str
    featurizer: dict[str, Artifact]  # precision -> ONNX featurizer
    featurizer_input: TensorSpec
    featurizer_output: TensorSpec  # pooled feature vector [batch, feature_dim]
    feature_dim: int
    heads: dict[str, Head] = Field(default_factory=dict)
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    featurizer_macs: int = 0  # multiply-accumulates per image (batch 1)
    calibration: dict[str, str] = Field(default_factory=dict)  # precision -> how it was calibrated
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    @computed_field  # type: ignore[prop-decorator]
    @property
    def precisions(self) -> list[str]:
        """The featurizer precision variants available (written into the JSON too)."""
        return sorted(self.featurizer)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelStore:
    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_model_dir()

    # -- writing ---------------------------------------------------------------------------------
    def add_artifact(self, source: Path | bytes, ext: str = "onnx") -> Artifact:
        """Copy a file (or bytes) into ``blobs/`` under its sha256; return its reference."""
        blobs = self.root / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=blobs, prefix=".incoming-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(source, bytes):
                    out.write(source)
                else:
                    with Path(source).open("rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)  # modules may run under another uid (containers)
            digest = sha256_file(tmp)
            rel = f"blobs/{digest}.{ext}"
            final = self.root / rel
            if final.exists() and sha256_file(final) == digest:
                tmp.unlink()
            else:
                os.replace(tmp, final)
            return Artifact(file=rel, sha256=digest, size=final.stat().st_size)
        finally:
            if tmp.exists():
                tmp.unlink()

    def save(self, manifest: ModelManifest) -> Path:
        """Write (atomically replace) the manifest of ``manifest.name``."""
        target = self.root / "manifests" / f"{manifest.name}.json"
        # readable by modules that run under another uid (containers), like the blobs
        atomic_write_text(target, manifest.model_dump_json(indent=2), mode=0o644)
        return target

    # -- reading ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        mdir = self.root / "manifests"
        if not mdir.is_dir():
            return []
        return sorted(p.stem for p in mdir.glob("*.json"))

    def manifests(self) -> list[ModelManifest]:
        return [self.get(n) for n in self.names()]

    def has(self, name: str) -> bool:
        return (self.root / "manifests" / f"{name}.json").is_file()

    def get(self, name: str) -> ModelManifest:
        path = self.root / "manifests" / f"{name}.json"
        if not path.is_file():
            known = ", ".join(self.names()) or "none"
            raise ModelNotFoundError(
                f"model {name!r} is not in the store at {self.root} (built: {known}); "
                f"run `edgefleet models build {name}`"
            )
        try:
            return ModelManifest.model_validate(json.loads(path.read_text()))
        except ValueError as exc:
            raise StoreError(f"manifest {path} is unreadable: {exc}") from exc

    def resolve(self, artifact: Artifact, verify: bool = True) -> Path:
        path = self.root / artifact.file
        if not path.is_file():
            raise StoreError(f"artifact {artifact.file} is missing from {self.root}")
        if verify:
            actual = sha256_file(path)
            if actual != artifact.sha256:
                raise IntegrityError(
                    f"artifact {artifact.file} is corrupted: sha256 {actual[:12]}… "
                    f"!= manifest {artifact.sha256[:12]}…; rebuild the model"
                )
        return path

    def featurizer_path(self, name: str, precision: str = "fp32", verify: bool = True) -> Path:
        manifest = self.get(name)
        if precision not in manifest.featurizer:
            raise StoreError(
                f"model {name!r} has no {precision} featurizer "
                f"(available: {', '.join(manifest.precisions)})"
            )
        return self.resolve(manifest.featurizer[precision], verify=verify)

    def head_path(self, name: str, head: str = "default", verify: bool = True) -> Path:
        manifest = self.get(name)
        if head not in manifest.heads:
            raise StoreError(
                f"model {name!r} has no head {head!r} (available: {', '.join(manifest.heads)})"
            )
        return self.resolve(manifest.heads[head].artifact, verify=verify)

    def verify(self, name: str) -> list[str]:
        """Check every artifact of a model; return the problems found (empty when intact)."""
        manifest = self.get(name)
        refs = [(f"featurizer.{p}", a) for p, a in manifest.featurizer.items()]
        refs += [(f"head.{h}", entry.artifact) for h, entry in manifest.heads.items()]
        problems = []
        for role, artifact in refs:
            try:
                self.resolve(artifact, verify=True)
            except StoreError as exc:
                problems.append(f"{role}: {exc}")
        return problems


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names (first WordNet synonym), shipped with the package."""
    text = (Path(__file__).with_name("imagenet_labels.txt")).read_text(encoding="utf-8")
    labels = text.splitlines()
    if len(labels) != 1000:
        raise StoreError(f"imagenet_labels.txt has {len(labels)} lines, expected 1000")
    return labels


def head_labels(head: Head) -> list[str]:
    if head.labels == IMAGENET_LABELS:
        return imagenet_labels()
    if head.label_names is None or len(head.label_names) != head.num_classes:
        raise StoreError("head has inline labels but no (or the wrong number of) label_names")
    return list(head.label_names)
