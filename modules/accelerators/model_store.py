"""The model store: content-addressed ONNX artifacts plus one JSON manifest per model.

Layout under the store root (``default_model_dir()``)::

    blobs/<sha256>.<ext>        every artifact, named by the sha256 of its bytes
    manifests/<name>.json       one ``ModelManifest`` per model (the current version)
    versions/<name>/<ver>.json  every kept version of an imported model (``models import``)

A model reference is ``NAME`` (the current version) or ``NAME:VERSION``.

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
    channels: Literal[1, 3] = 3  # 1: gray (luma of RGB), normalized with mean[0] / std[0]
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


class DetectorSettings(BaseModel):
    """How a detector turns its networks' outputs into detections (``detection.py``)."""

    architecture: Literal["mtcnn", "ssd", "decoded"] = "mtcnn"
    labels: list[str] = Field(default_factory=lambda: ["face"])  # index = class id
    # mtcnn: P-Net, R-Net, O-Net; ssd and decoded: the first is the score threshold
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_face: float = 20.0  # smallest face side searched for, in image pixels
    factor: float = 0.709  # pyramid step (area halves every two levels)
    level_nms: float = 0.5  # IoU within one pyramid level
    stage_nms: float = 0.7  # IoU across levels and after each stage (O-Net: over the smaller)
    # (ssd: per-class IoU)
    max_detections: int = 100
    # decoded (an imported graph that ends in detections): its outputs and their box format
    boxes_output: str = ""
    scores_output: str = ""
    classes_output: str | None = None
    box_format: Literal["xyxy", "yxyx", "xywh", "cxcywh"] = "xyxy"
    box_units: Literal["pixels", "normalized"] = "pixels"


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
    origin: Literal["built", "imported"] = "built"
    kind: Literal["classifier", "detector"] = "classifier"
    # precision -> top-1 agreement with fp32 on held-out images (``models quantize``)
    agreement: dict[str, float] = Field(default_factory=dict)
    flagged: list[str] = Field(default_factory=list)  # precisions below the agreement threshold
    source: dict[str, str] = Field(default_factory=dict)  # where an imported model came from
    # a multi-network detector: stage -> precision -> artifact (``featurizer`` is its first stage)
    stages: dict[str, dict[str, Artifact]] = Field(default_factory=dict)
    detector: DetectorSettings | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())

    @computed_field  # type: ignore[prop-decorator]
    @property
    def precisions(self) -> list[str]:
        """The featurizer precision variants available (written into the JSON too)."""
        return sorted(self.featurizer)


def split_ref(ref: str) -> tuple[str, str | None]:
    """``NAME`` -> (NAME, None); ``NAME:VERSION`` -> (NAME, VERSION)."""
    name, sep, version = ref.partition(":")
    if not name or (sep and not version) or "/" in ref or "\\" in ref or ref.startswith("."):
        raise StoreError(f"bad model reference {ref!r}: expected NAME or NAME:VERSION")
    return name, (version or None)


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

    def save(self, manifest: ModelManifest, current: bool = True) -> Path:
        """Write (atomically replace) the manifest of ``manifest.name``. An imported model's
        manifest is also kept under its version; ``current=False`` writes only that copy."""
        text = manifest.model_dump_json(indent=2)
        target = self.root / "manifests" / f"{manifest.name}.json"
        if manifest.origin == "imported":
            kept = self.root / "versions" / manifest.name / f"{manifest.version}.json"
            atomic_write_text(kept, text, mode=0o644)
            if not current:
                return kept
        # readable by modules that run under another uid (containers), like the blobs
        atomic_write_text(target, text, mode=0o644)
        return target

    def remove(self, ref: str) -> list[str]:
        """Remove ``NAME`` (every version) or ``NAME:VERSION``; another kept version becomes
        current when the current one goes. Unreferenced blobs are deleted. Returns the
        versions removed."""
        name, version = split_ref(ref)
        kept = self.versions(name)
        if version is None:
            self.get(name)
            gone = kept or [self.get(name).version]
        elif version in kept:
            gone = [version]
        else:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r} (kept: {', '.join(kept) or 'none'})"
            )
        for ver in gone:
            (self.root / "versions" / name / f"{ver}.json").unlink(missing_ok=True)
        rest = [v for v in kept if v not in gone]
        current = self.root / "manifests" / f"{name}.json"
        if current.is_file() and self.get(name).version in gone:
            if rest:
                self.save(self.get(f"{name}:{rest[-1]}"))
            else:
                current.unlink()
        if not rest:
            shutil.rmtree(self.root / "versions" / name, ignore_errors=True)
        self.collect_garbage()
        return gone

    def collect_garbage(self) -> int:
        """Delete blobs that no manifest (current or kept version) names; return how many."""
        used: set[str] = set()
        files = list((self.root / "manifests").glob("*.json"))
        files += list((self.root / "versions").glob("*/*.json"))
        for path in files:
            manifest = ModelManifest.model_validate(json.loads(path.read_text()))
            used.update(a.file for a in manifest.featurizer.values())
            used.update(h.artifact.file for h in manifest.heads.values())
            used.update(a.file for stage in manifest.stages.values() for a in stage.values())
        removed = 0
        for blob in (self.root / "blobs").glob("*"):
            if blob.is_file() and f"blobs/{blob.name}" not in used:
                blob.unlink()
                removed += 1
        return removed

    # -- reading ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        mdir = self.root / "manifests"
        if not mdir.is_dir():
            return []
        return sorted(p.stem for p in mdir.glob("*.json"))

    def manifests(self) -> list[ModelManifest]:
        return [self.get(n) for n in self.names()]

    def has(self, ref: str) -> bool:
        return self._manifest_path(ref).is_file()

    def versions(self, name: str) -> list[str]:
        """The kept versions of an imported model, oldest first (empty for a built one)."""
        vdir = self.root / "versions" / name
        if not vdir.is_dir():
            return []
        found = [
            ModelManifest.model_validate(json.loads(p.read_text())) for p in vdir.glob("*.json")
        ]
        return [m.version for m in sorted(found, key=lambda m: (m.created_at, m.version))]

    def _manifest_path(self, ref: str) -> Path:
        name, version = split_ref(ref)
        if version is None:
            return self.root / "manifests" / f"{name}.json"
        return self.root / "versions" / name / f"{version}.json"

    def get(self, ref: str) -> ModelManifest:
        """The manifest of ``NAME`` (current version) or ``NAME:VERSION``."""
        path = self._manifest_path(ref)
        name, version = split_ref(ref)
        current = self.root / "manifests" / f"{name}.json"
        if not path.is_file() and current.is_file():
            manifest = self._read(current)
            if manifest.version == version:  # a built model named with its one version
                return manifest
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r} "
                f"(kept: {', '.join(self.versions(name)) or manifest.version})"
            )
        if not path.is_file():
            known = ", ".join(self.names()) or "none"
            raise ModelNotFoundError(
                f"model {name!r} is not in the store at {self.root} (built: {known}); "
                f"run `edgefleet models build {name}`"
            )
        return self._read(path)

    @staticmethod
    def _read(path: Path) -> ModelManifest:
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
        for stage, variants in manifest.stages.items():
            refs += [(f"{stage}.{p}", a) for p, a in variants.items()]
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
