"""Docker engine steps of packaging: build the context, measure the image, push with credentials."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modules.packaging.context import PackageError

_STEP = re.compile(r"^Step (\d+/\d+) : (.*)")


def docker_client() -> Any:
    import docker
    import docker.errors

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise PackageError(f"cannot reach the docker engine: {exc}") from None
    return client


def build_image(client: Any, ctx: Path, tag: str, say: Callable[[str], None]) -> str:
    """``docker build`` of ``ctx``; returns the image id. Progress: the Dockerfile steps."""
    import docker.errors

    try:
        stream = client.api.build(path=str(ctx), tag=tag, rm=True, forcerm=True, decode=True)
        for event in stream:
            if event.get("error"):
                raise PackageError(f"docker build failed: {event['error'].strip()}")
            match = _STEP.match(str(event.get("stream", "")).strip())
            if match:
                say(f"docker build step {match.group(1)}: {match.group(2)[:70]}")
    except docker.errors.APIError as exc:
        raise PackageError(f"docker build failed: {exc.explanation or exc}") from None
    return str(client.images.get(tag).id)


def image_exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def image_size(client: Any, tag: str) -> int:
    return int(client.images.get(tag).attrs["Size"])


def split_reference(image: str) -> tuple[str, str, str]:
    """``REGISTRY/NAME:TAG`` -> (registry, repository with registry, tag)."""
    last = image.rsplit("/", 1)[-1]
    repo, tag = image.rsplit(":", 1) if ":" in last else (image, "latest")
    first = repo.split("/", 1)[0]
    registry = (
        first if "/" in repo and ("." in first or ":" in first or first == "localhost") else ""
    )
    return registry, repo, tag


def push_image(
    client: Any, image: str, user: str | None, password: str | None, say: Callable[[str], None]
) -> str:
    """Push with the given credentials; returns the pushed digest. Refusals are one clear line."""
    import docker.errors

    registry, repo, tag = split_reference(image)
    auth = {"username": user, "password": password} if user else None
    say(f"pushing {image}")
    digest = ""
    try:
        for event in client.api.push(repo, tag, auth_config=auth, stream=True, decode=True):
            if event.get("error"):
                raise PackageError(_push_error(registry or "the registry", user, event["error"]))
            status = str(event.get("status", ""))
            if event.get("aux", {}).get("Digest"):
                digest = str(event["aux"]["Digest"])
            elif status in ("Pushing", "Pushed", "Layer already exists"):
                say(f"pushing {image}: {status.lower()} {event.get('id', '')}")
    except docker.errors.APIError as exc:
        raise PackageError(_push_error(registry, user, str(exc.explanation or exc))) from None
    return digest


def _push_error(registry: str, user: str | None, detail: str) -> str:
    detail = detail.strip().splitlines()[0] if detail.strip() else "no detail"
    if any(w in detail.lower() for w in ("unauthorized", "authentication required", "denied")):
        who = (
            f"user {user!r}" if user else "no credentials (use --registry-user/--registry-password)"
        )
        return f"{registry} refused the push with {who}: {detail}"
    return f"push to {registry} failed: {detail}"


def check_login(client: Any, registry: str, user: str, password: str) -> None:
    """Ask the registry to accept the credentials before the long build (a push checks again)."""
    import docker.errors

    try:
        client.api.login(username=user, password=password, registry=registry, reauth=True)
    except docker.errors.APIError as exc:
        raise PackageError(_push_error(registry, user, str(exc.explanation or exc))) from None
