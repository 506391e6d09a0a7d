"""The pip requirements an image is built with: the runtime's (per accelerator) and an entry
script's own (``--requirements FILE`` / ``--pip PKG``), checked against the runtime's versions.

An entry script's packages go into a layer of their own, searched after the runtime's trees. The
runtime's packages are pinned to the versions the image already holds: a requirement that names
one of them is dropped when that version satisfies it, and refused when it does not (replacing
numpy or onnxruntime under the server would break scoring in ways only the device would show).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from modules.packaging.context import RUNTIME_REQUIREMENTS, PackageError

IMAGE_ACCELERATORS = ("cpu", "gpu")
# CUDA and cuDNN come as wheels (the extras), so the Debian base needs no CUDA install; the host
# needs only the NVIDIA driver and container toolkit. TensorRT's wheels are not included.
GPU_ONNXRUNTIME = "onnxruntime-gpu[cuda,cudnn]>=1.21"


def runtime_requirements(accelerator: str) -> tuple[str, ...]:
    """The serving wheels for an image accelerator: ``gpu`` swaps in onnxruntime-gpu."""
    if accelerator not in IMAGE_ACCELERATORS:
        raise PackageError(
            f"unknown image accelerator {accelerator!r}; choose one of "
            f"{', '.join(IMAGE_ACCELERATORS)} (the cpu image also drives a mapped FPGA emulator)"
        )
    if accelerator == "cpu":
        return RUNTIME_REQUIREMENTS
    return tuple(
        GPU_ONNXRUNTIME if Requirement(r).name == "onnxruntime" else r for r in RUNTIME_REQUIREMENTS
    )


def parse_requirements(text: str, source: str) -> list[str]:
    """The requirement lines of a pip requirements file; options and bad lines are refused."""
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise PackageError(
                f"{source}:{number}: pip options ({line.split()[0]}) are not supported; "
                "list one requirement per line"
            )
        found.append(_checked(line, f"{source}:{number}"))
    return found


def _checked(text: str, where: str) -> str:
    try:
        return str(Requirement(text))
    except InvalidRequirement as exc:
        detail = str(exc).splitlines()[0]
        raise PackageError(f"{where}: not a requirement: {text!r} ({detail})") from None


def gather(files: Iterable[Path], packages: Iterable[str]) -> list[str]:
    """``--requirements`` files then ``--pip`` packages; a missing file is one clear error."""
    found = []
    for path in files:
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise PackageError(f"requirements file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PackageError(f"cannot read requirements file {path}: {exc}") from None
        found += parse_requirements(text, str(path))
    found += [_checked(p, "--pip") for p in packages]
    return found


def requirement_set(requirements: Iterable[str]) -> tuple[str, ...]:
    """Normalized, deduplicated and sorted, so the same set always names the same cached layer."""
    unique = set()
    for text in requirements:
        req = Requirement(text)
        req.name = canonicalize_name(req.name)
        unique.add(str(req))
    return tuple(sorted(unique))


def split_against_runtime(
    requirements: Iterable[str], pins: Mapping[str, str]
) -> tuple[tuple[str, ...], list[str]]:
    """(what to install, notices); a requirement the runtime's version does not satisfy is refused.

    ``pins`` maps canonical distribution names to the versions in the runtime's trees."""
    install, notices = [], []
    for text in requirements:
        req = Requirement(text)
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            install.append(text)
        elif req.specifier.contains(pinned, prereleases=True):
            notices.append(f"{req.name} {pinned} is already in the runtime; using it")
        else:
            raise PackageError(
                f"requirement {text!r} conflicts with the runtime's {req.name} {pinned}, which "
                "the scoring server needs; the runtime's packages cannot be replaced"
            )
    return tuple(install), notices


def constraint_lines(pins: Mapping[str, str]) -> tuple[str, ...]:
    """pip constraints that hold the entry script's dependencies to the runtime's versions."""
    return tuple(f"{name}=={version}" for name, version in sorted(pins.items()))


def runtime_pins(trees: Iterable[Path]) -> dict[str, str]:
    """Canonical name -> version of every distribution in the runtime's ``--target`` trees."""
    from importlib.metadata import distributions

    pins: dict[str, str] = {}
    for dist in distributions(path=[str(t) for t in trees]):
        name = dist.metadata["Name"]
        if name:
            pins.setdefault(canonicalize_name(name), dist.version)
    return pins
