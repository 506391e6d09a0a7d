"""The docker build contexts of a scoring image: the runtime image (base + wheels) and the image
itself (serving code, model files, entry script).

Wheels come from the host's package index with ``pip install --target`` (the build itself needs no
network), into a cache keyed by the requirement set; the runtime image that copies them is built
once per set and kept under a stable local tag, so a package build sends only code and model.
Only what ``modules/scoring`` imports at run time goes in: no torch, onnx or openvino (the FPGA
emulator runs on the host; the image reaches its socket).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from modules.accelerators.model_store import Artifact, ModelManifest, ModelStore, StoreError

APP_ROOT = "/opt/edgefleet"
ENTRY_DIR_IN_IMAGE = "/var/azureml-app"
PACKAGE_JSON = f"{APP_ROOT}/package.json"
GRPC_PORT = 50051
HTTP_PORT = 5001
SITE_CACHE_ENV = "EDGEFLEET_IMAGE_SITE_CACHE"
DEFAULT_SITE_CACHE = Path("/var/cache/edgefleet/image-site")

# what the serving path imports at run time (modules/scoring, modules/accelerators, the CLI group)
RUNTIME_REQUIREMENTS = (
    "numpy>=1.26",
    "onnxruntime>=1.18",
    "opencv-python-headless>=4.9",
    "grpcio>=1.60",
    "protobuf>=7.35",
    "pydantic>=2.7",
    "typer>=0.12",
    "rich>=13",
    "pyyaml>=6",
)
# Azure ML's HTTP server pins flask, gunicorn, pydantic...: it gets a tree of its own, searched
# before the serving tree only by the azmlinfsrv process
AZML_REQUIREMENTS = ("azureml-inference-server-http>=1.0",)
# the serving code of this repository that goes into the image (paths relative to its root)
APP_FILES = (
    "edgefleet/__init__.py",
    "edgefleet/cli_apps.py",
    "edgefleet/files.py",
    "modules/__init__.py",
    "modules/scoring",
    "modules/accelerators",
    "modules/packaging/__init__.py",
    "modules/packaging/entrypoint.py",
)
# parts of the wheels the server never imports
_TRIM = ("onnxruntime/transformers", "onnxruntime/quantization", "onnxruntime/tools", "bin")


class PackageError(Exception):
    """Bad input or a failed step; the message is the one line the user sees."""


@dataclass(frozen=True)
class ImageSpec:
    model: str
    head: str
    precision: str
    entry_script: str | None = None  # the script's file name inside ENTRY_DIR_IN_IMAGE
    accelerator: str = "cpu"  # cpu (also drives a mapped FPGA emulator) or gpu
    requirements: tuple[str, ...] = ()  # the entry script's own packages (the "user" tree)

    def labels(self) -> dict[str, str]:
        def text(v: object) -> str:
            return ",".join(v) if isinstance(v, tuple) else str(v or "")

        return {f"net.edgefleet.package.{k}": text(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Layer:
    """One wheel tree of a runtime image, copied to ``APP_ROOT/tree``."""

    tree: str  # site (serving), azml (azmlinfsrv), user (the entry script's packages)
    requirements: tuple[str, ...]
    # pip constraints: the entry script's dependencies held to the versions below it; a
    # distribution named here is left out of the tree (the layer below has it)
    constraints: tuple[str, ...] = ()
    flavour: str = ""  # tag prefix: gpu- for the onnxruntime-gpu serving tree


def models_in_image(model: str) -> str:
    """Azure ML's single-model layout (``azureml-models/<name>/<version>``), which azmlinfsrv
    and score.py authors expect in AZUREML_MODEL_DIR; it holds an edgefleet model store."""
    return f"{ENTRY_DIR_IN_IMAGE}/azureml-models/{model}/1"


def runtime_tag(parent: str, layer: Layer) -> str:
    """A local image of ``parent`` + one wheel tree, named by both (a new base: a new tag)."""
    key = requirements_key((parent, *layer.requirements, *layer.constraints))
    prefix = "" if layer.tree == "site" else f"{layer.tree}-"
    return f"edgefleet-runtime:{layer.flavour}{prefix}{key}"


def assemble_runtime(ctx: Path, parent: str, layer: Layer, say: Callable[[str], None]) -> None:
    """The context of a runtime layer: one wheel tree (hundreds of MB, built rarely).

    The serving wheels go to ``site`` on the base; azmlinfsrv's to ``azml`` on top of that, so
    the images with and without an entry script share the big layer; an entry script's own
    packages to ``user`` on top of both."""
    tree = site_tree(layer.requirements, say, layer.constraints)
    _link_tree(tree, ctx / layer.tree)
    (ctx / "Dockerfile").write_text(runtime_dockerfile(parent, layer.tree, library_dirs(tree)))


def library_dirs(tree: Path) -> list[str]:
    """The shared-library folders of NVIDIA's CUDA/cuDNN wheels in a tree (relative to it):
    onnxruntime-gpu's CUDA provider finds them only on the loader's path."""
    return sorted(str(p.relative_to(tree)) for p in tree.glob("nvidia/*/lib") if p.is_dir())


def runtime_dockerfile(parent: str, tree: str, lib_dirs: list[str]) -> str:
    lines = [f"FROM {parent}", f"COPY {tree} {APP_ROOT}/{tree}"]
    if lib_dirs:
        lines.append("ENV LD_LIBRARY_PATH=" + ":".join(f"{APP_ROOT}/{tree}/{d}" for d in lib_dirs))
    return "\n".join(lines) + "\n"


def render_dockerfile(runtime: str, spec: ImageSpec) -> str:
    """The Dockerfile of a scoring image: code, model and script on the runtime image."""
    models = models_in_image(spec.model)
    # the entry script's packages come last: the server's own versions always win
    user = f":{APP_ROOT}/user" if spec.requirements else ""
    env = {
        "PYTHONPATH": f"{APP_ROOT}/site:{APP_ROOT}/app{user}",
        "EDGEFLEET_MODEL_DIR": models,
        "AZUREML_MODEL_DIR": models,
        "EDGEFLEET_CPU_ENGINE": "onnxruntime",
        "PYTHONUNBUFFERED": "1",
    }
    lines = [f"FROM {runtime}", f"COPY app {APP_ROOT}/app", f"COPY models {models}"]
    if spec.entry_script:
        lines.append(f"COPY azureml-app {ENTRY_DIR_IN_IMAGE}")
        env["AZUREML_ENTRY_SCRIPT"] = f"{ENTRY_DIR_IN_IMAGE}/{spec.entry_script}"
    if spec.accelerator == "gpu":
        # CUDA only: the image has no TensorRT libraries for its execution provider
        env |= {"SCORING_ACCELERATOR": "gpu", "EDGEFLEET_GPU_TENSORRT": "0"}
        env |= {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}
    lines.append(f"COPY package.json {PACKAGE_JSON}")
    lines += [f"ENV {k}={v}" for k, v in env.items()]
    labels = {k: v.replace("\\", "\\\\").replace('"', '\\"') for k, v in spec.labels().items()}
    lines.append("LABEL " + " ".join(f'{k}="{v}"' for k, v in labels.items()))
    lines += [f"EXPOSE {GRPC_PORT}/tcp {HTTP_PORT}/tcp", f"WORKDIR {APP_ROOT}"]
    lines.append('CMD ["python3", "-m", "modules.packaging.entrypoint"]')
    return "\n".join(lines) + "\n"


def requirements_key(requirements: tuple[str, ...]) -> str:
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    return hashlib.sha256("\n".join([py, *requirements]).encode()).hexdigest()[:12]


def site_tree(
    requirements: tuple[str, ...], say: Callable[[str], None], constraints: tuple[str, ...] = ()
) -> Path:
    """A ``pip install --target`` tree of ``requirements``, made once per requirement set."""
    cache = Path(os.environ.get(SITE_CACHE_ENV) or DEFAULT_SITE_CACHE)
    target = cache / requirements_key((*requirements, *constraints))
    if (target / ".complete").is_file():
        return target
    say(f"installing {len(requirements)} requirement(s) from the package index into {target}")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-warn-script-location"]
    cmd += ["--only-binary=:all:", "--target", str(partial)]
    pins = target.with_name(target.name + ".constraints.txt")
    if constraints:
        pins.write_text("\n".join(constraints) + "\n")
        cmd += ["--constraint", str(pins)]
    proc = subprocess.run([*cmd, *requirements], capture_output=True, text=True)
    pins.unlink(missing_ok=True)
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        what = "the entry script's requirements" if constraints else "the image's wheels"
        raise PackageError(pip_failure(proc.stderr, what))
    _drop_distributions(partial, {c.split("==", 1)[0] for c in constraints})
    for rel in _TRIM:
        shutil.rmtree(partial / rel, ignore_errors=True)
    for tests in list(partial.glob("*/tests")):
        shutil.rmtree(tests, ignore_errors=True)
    (partial / ".complete").write_text("\n".join(requirements) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def pip_failure(stderr: str, what: str) -> str:
    """pip's failure in one line: its first ERROR line, with a word on conflicts."""
    lines = [ln.strip() for ln in stderr.splitlines()]
    errors = [ln.removeprefix("ERROR: ") for ln in lines if ln.startswith("ERROR")]
    detail = errors[0] if errors else " ".join(stderr.strip()[-300:].split()) or "no detail"
    if any("conflict" in ln.lower() for ln in lines):
        detail += " (the runtime's own packages are held at the versions in the image)"
    return f"pip could not install {what}: {detail}"


def _drop_distributions(tree: Path, names: set[str]) -> None:
    """Remove the distributions named (canonical names) from a ``--target`` tree."""
    from importlib.metadata import distributions

    from packaging.utils import canonicalize_name

    if not names:
        return
    for dist in list(distributions(path=[str(tree)])):
        if canonicalize_name(dist.metadata["Name"] or "") not in names:
            continue
        for file in dist.files or []:
            Path(str(dist.locate_file(file))).unlink(missing_ok=True)
    for folder in sorted(tree.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


BUILD_DIR = Path("/var/cache/edgefleet/image-build")  # beside the wheel cache: hard links work


@contextmanager
def build_dir() -> Iterator[Path]:
    """A fresh build context directory, removed afterwards."""
    try:
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        root: Path | None = BUILD_DIR
    except OSError:
        root = None
    ctx = Path(tempfile.mkdtemp(prefix="ctx-", dir=root))
    try:
        yield ctx
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def _link_tree(src: Path, dst: Path) -> None:
    """Hard links where the filesystem allows (the wheels are hundreds of MB), else copies."""

    def link_or_copy(s: str, d: str) -> object:
        try:
            os.link(s, d)
            return d
        except OSError:
            return shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link_or_copy, dirs_exist_ok=True)


def resolve_head(manifest: ModelManifest, head: str | None) -> str:
    """The head an image ships: ``default`` unless named for a classifier, none for a detector
    (whose answer is its boxes)."""
    if manifest.kind != "detector":
        return head or "default"
    if head is not None:
        raise PackageError(
            f"{manifest.name} is a detector: --head is for classifiers (a detector ships no head)"
        )
    return ""


def trimmed_manifest(
    manifest: ModelManifest, precision: str, head: str, accelerator: str = "cpu"
) -> ModelManifest:
    """The model's manifest with only the featurizer precision and the head that are shipped
    (a detector: that precision of each of its networks, and no head).

    A gpu image of an fp16 model also ships its fp32 artifact when there is one: without a
    usable GPU the server falls back to the CPU, where fp16 runs as fp32."""
    if precision not in manifest.featurizer:
        raise PackageError(
            f"model {manifest.name!r} has no {precision} featurizer "
            f"(available: {', '.join(manifest.precisions)})"
        )
    shipped = [precision]
    if accelerator == "gpu" and precision == "fp16" and "fp32" in manifest.featurizer:
        shipped.append("fp32")
    featurizer = {p: manifest.featurizer[p] for p in shipped}
    if manifest.kind == "detector":
        resolve_head(manifest, head or None)
        lacking = [
            stage for stage, variants in manifest.stages.items() if precision not in variants
        ]
        if lacking:
            raise PackageError(
                f"detector {manifest.name!r} has no {precision} {', '.join(lacking)} network"
            )
        stages = {
            stage: {p: variants[p] for p in shipped if p in variants}
            for stage, variants in manifest.stages.items()
        }
        update = {"featurizer": featurizer, "stages": stages, "heads": {}}
        return manifest.model_copy(update=update)
    if head not in manifest.heads:
        raise PackageError(
            f"model {manifest.name!r} has no head {head!r} (available: {', '.join(manifest.heads)})"
        )
    return manifest.model_copy(
        update={"featurizer": featurizer, "heads": {head: manifest.heads[head]}}
    )


def shipped_artifacts(manifest: ModelManifest) -> list[Artifact]:
    """Every stored file a (trimmed) manifest names, each once: featurizer, networks, heads."""
    found = [*manifest.featurizer.values(), *(h.artifact for h in manifest.heads.values())]
    found += [a for variants in manifest.stages.values() for a in variants.values()]
    return list({a.file: a for a in found}.values())


def copy_model(store: ModelStore, spec: ImageSpec, dest: Path) -> ModelManifest:
    """Copy one model (one precision, one head or a detector's networks) into a fresh store at
    ``dest``."""
    try:
        manifest = trimmed_manifest(
            store.get(spec.model), spec.precision, spec.head, spec.accelerator
        )
        files = [store.resolve(a) for a in shipped_artifacts(manifest)]
    except StoreError as exc:
        raise PackageError(str(exc)) from None
    (dest / "blobs").mkdir(parents=True)
    for path in files:
        _link_file(path, dest / "blobs" / path.name)
    ModelStore(dest).save(manifest)
    return manifest


def _link_file(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def assemble(
    ctx: Path,
    *,
    runtime: str,
    spec: ImageSpec,
    store: ModelStore,
    repo_root: Path,
    entry_script: Path | None,
    say: Callable[[str], None],
) -> None:
    """Write the whole build context into the empty directory ``ctx``."""
    copy_model(store, spec, ctx / "models")
    if entry_script is not None:
        (ctx / "azureml-app").mkdir()
        shutil.copy2(entry_script, ctx / "azureml-app" / entry_script.name)
    say("copying the serving code")
    for rel in APP_FILES:
        src, dst = repo_root / rel, ctx / "app" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst)
    (ctx / "package.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    (ctx / "Dockerfile").write_text(render_dockerfile(runtime, spec))
