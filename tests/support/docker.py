"""Reusable docker test helpers: a real registry with htpasswd auth and tiny busybox images.

``Registry`` runs Debian's ``docker-registry`` on a free 127.0.0.1 port (Docker treats loopback
registries as insecure, so plain HTTP works) with a bcrypt htpasswd file from ``htpasswd -Bbn``.
``build_busybox_image`` builds ``FROM scratch`` + Debian's static busybox with a given command and
optional HEALTHCHECK. Everything created carries the ``net.edgefleet.test`` label so
``cleanup_label`` removes it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

TEST_LABEL = "net.edgefleet.test"
BUSYBOX = "/bin/busybox"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_client() -> Any:
    import docker

    return docker.from_env()


class Registry:
    def __init__(self, root: Path, user: str = "edge", password: str = "s3cret") -> None:
        self.root = root
        self.user = user
        self.password = password
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        htpasswd = subprocess.run(
            ["htpasswd", "-Bbn", self.user, self.password], check=True, capture_output=True
        ).stdout
        (self.root / "htpasswd").write_bytes(htpasswd)
        (self.root / "data").mkdir(exist_ok=True)
        # the free port may be taken before the registry binds it: then try another one
        for attempt in range(5):
            if attempt:
                self.port = free_port()
                self.address = f"127.0.0.1:{self.port}"
            if self._start_once():
                return
        raise RuntimeError(f"registry did not start: {self._log()}")

    def _log(self) -> str:
        return (self.root / "registry.log").read_text(errors="replace")[-2000:]

    def _start_once(self) -> bool:
        (self.root / "config.yml").write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'data'}}}, "
            "delete: {enabled: true}}\n"
            f"http: {{addr: '{self.address}'}}\n"
            f"auth: {{htpasswd: {{realm: test, path: {self.root / 'htpasswd'}}}}}\n"
        )
        with open(self.root / "registry.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["/usr/bin/docker-registry", "serve", str(self.root / "config.yml")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                r = httpx.get(f"http://{self.address}/v2/", timeout=5)
                # only a registry answers with this header (not some other server on the port)
                if "docker-distribution-api-version" in r.headers:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"registry did not start: {self._log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def credentials(self, password: str | None = None) -> dict[str, dict[str, str]]:
        """``registryCredentials`` of a manifest for this registry."""
        return {
            "testreg": {
                "username": self.user,
                "password": self.password if password is None else password,
                "address": self.address,
            }
        }

    def push(self, local_tag: str, repo: str, tag: str, remove_local: bool = True) -> str:
        """Push a local image as ``<registry>/<repo>:<tag>``; by default drop the local copy."""
        client = docker_client()
        try:
            target = f"{self.address}/{repo}"
            client.api.tag(local_tag, target, tag)
            auth = {"username": self.user, "password": self.password}
            for event in client.api.push(target, tag, auth_config=auth, stream=True, decode=True):
                if isinstance(event, dict) and event.get("error"):
                    raise RuntimeError(event["error"])
            if remove_local:
                client.api.remove_image(f"{target}:{tag}")
            return f"{target}:{tag}"
        finally:
            client.close()


@contextmanager
def running_registry() -> Iterator[Registry]:
    root = Path(tempfile.mkdtemp(prefix="edgefleet-registry-"))
    reg = Registry(root)
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(root, ignore_errors=True)


def build_busybox_image(
    tag: str,
    cmd: list[str] | None = None,
    healthcheck: list[str] | None = None,
    run_label: str = "",
) -> str:
    """Build ``FROM scratch`` + static busybox (sh, sleep, echo... as symlinks)."""
    ctx = Path(tempfile.mkdtemp(prefix="edgefleet-img-"))
    try:
        (ctx / "bin").mkdir()
        shutil.copy2(BUSYBOX, ctx / "bin" / "busybox")
        for applet in ("sh", "sleep", "echo", "cat", "test", "touch", "rm", "true", "false", "ls"):
            (ctx / "bin" / applet).symlink_to("busybox")
        lines = ["FROM scratch", "COPY bin /bin", "ENV PATH=/bin"]
        lines.append(f'LABEL {TEST_LABEL}="{run_label or "1"}"')
        if healthcheck:
            quoted = ", ".join(f'"{a}"' for a in healthcheck)
            lines.append(f"HEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD [{quoted}]")
        if cmd:
            lines.append("CMD [" + ", ".join(f'"{a}"' for a in cmd) + "]")
        (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
        client = docker_client()
        try:
            client.images.build(path=str(ctx), tag=tag, rm=True, forcerm=True)
        finally:
            client.close()
        return tag
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def cleanup_label(label: str, value: str) -> None:
    """Remove every container and image carrying ``label=value``."""
    import docker.errors

    client = docker_client()
    try:
        for c in client.api.containers(all=True, filters={"label": f"{label}={value}"}):
            try:
                client.api.remove_container(c["Id"], force=True)
            except docker.errors.APIError:
                pass
        for img in client.api.images(filters={"label": f"{label}={value}"}):
            try:
                client.api.remove_image(img["Id"], force=True)
            except docker.errors.APIError:
                pass
    finally:
        client.close()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"
