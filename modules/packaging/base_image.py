"""The local base image: a Debian rootfs from Debian's own packages, imported once into docker.

No public container registry is reachable, so the base is ``mmdebstrap`` (minbase + python3)
written as a tarball under ``/var/cache/edgefleet/base-rootfs`` and ``docker import``-ed under a
stable tag. Both are reused while present; the tag names the package set, so changing it builds
a new base instead of reusing a stale one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

SUITE = "bookworm"  # Debian 12: python3 is 3.11, the ABI of the wheels installed on top
PACKAGES = ("python3", "ca-certificates")
CACHE_ENV = "EDGEFLEET_BASE_CACHE"
DEFAULT_CACHE = Path("/var/cache/edgefleet/base-rootfs")
# docs, man pages and translations are not needed in a server image
_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")


class BaseImageError(Exception):
    """The base rootfs could not be made or imported."""


def base_key(suite: str = SUITE, packages: tuple[str, ...] = PACKAGES) -> str:
    text = "\n".join([suite, *sorted(packages), *_EXCLUDES])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def base_tag(key: str | None = None) -> str:
    return f"edgefleet-base:{SUITE}-py3-{key or base_key()}"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def mmdebstrap_command(target: Path, suite: str = SUITE) -> list[str]:
    cmd = ["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
    cmd += [f"--dpkgopt=path-exclude={p}" for p in _EXCLUDES]
    # keep the apt lists out of the image; the image never runs apt
    cmd += ["--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*"]
    return [*cmd, suite, str(target)]


def _image_exists(tag: str) -> bool:
    proc = subprocess.run(["docker", "image", "inspect", tag], capture_output=True)
    return proc.returncode == 0


def ensure_base_image(say: Callable[[str], None] = lambda _m: None) -> str:
    """The base image's tag; made (rootfs tarball, then ``docker import``) only when missing."""
    tag = base_tag()
    if _image_exists(tag):
        return tag
    tarball = cache_dir() / f"{SUITE}-{base_key()}.tar"
    if not tarball.is_file():
        if shutil.which("mmdebstrap") is None:
            raise BaseImageError(
                "mmdebstrap is not installed (apt-get install mmdebstrap) and no cached rootfs "
                f"is at {tarball}"
            )
        say(f"building the Debian {SUITE} rootfs with mmdebstrap (once; cached in {tarball})")
        tarball.parent.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_name(f"partial-{tarball.name}")  # the .tar suffix picks the format
        proc = subprocess.run(mmdebstrap_command(partial), capture_output=True, text=True)
        if proc.returncode != 0:
            partial.unlink(missing_ok=True)
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise BaseImageError(f"mmdebstrap failed: {' | '.join(tail)}")
        os.replace(partial, tarball)
    say(f"importing {tarball.name} as {tag}")
    proc = subprocess.run(["docker", "import", str(tarball), tag], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BaseImageError(f"docker import of {tarball} failed: {proc.stderr.strip()}")
    return tag
