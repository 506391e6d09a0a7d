"""The docker runtime: modules as containers on the local Docker engine (docker SDK).

Containers carry labels (``net.edgefleet.agent``, ``.module``, ``.spec``) so the agent finds its
own after a crash and never creates a duplicate. ``createOptions`` is Docker's create JSON and is
sent as is, with our image, env, labels, capped json-file logs and restart policy ``no`` (the agent
applies the module's restart policy itself, with backoff). Images are pulled with the deployment's
registryCredentials and garbage-collected once no deployment has used them for ``image_gc_secs``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_agent.runtime.base import LogLine, ModuleSpec, ModuleState, RuntimeFailure
from edge_agent.runtime.container_network import gateway_of
from edge_agent.runtime.workload_mount import container_workload
from edgefleet.files import atomic_write_json
from edgefleet.manifest import RegistryCredential
from edgefleet.utctime import parse_utc_text, utc_now

log = logging.getLogger("edgefleet.agent.docker")

LABEL_AGENT = "net.edgefleet.agent"
LABEL_MODULE = "net.edgefleet.module"
LABEL_SPEC = "net.edgefleet.spec"
LABEL_VERSION = "net.edgefleet.version"
GATEWAY_TTL_SECS = 30.0


def _parse_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 time (nanoseconds, ``Z``); None for its zero time "never"."""
    if not value or value.startswith("0001-"):
        return None
    value = value.rstrip("Z")
    if "." in value:  # Python reads at most microseconds
        head, frac = value.split(".", 1)
        value = f"{head}.{frac[:6]}"
    return parse_utc_text(value)


def split_image(image: str) -> tuple[str, str]:
    """``reg:5000/a/b:tag`` -> (``reg:5000/a/b``, ``tag``); digests kept on the repository."""
    if "@" in image:
        return image, ""
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


def registry_of(image: str) -> str:
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


class DockerRuntime:
    kind = "docker"

    def __init__(
        self,
        agent_id: str,
        data_dir: Path,
        name_prefix: str = "",
        log_max_size: str = "10m",
        log_max_file: int = 3,
        image_gc_secs: float = 7 * 86400,
        stop_on_shutdown: bool = False,
        docker_url: str | None = None,
        stop_timeout: int = 10,
    ) -> None:
        import docker

        self.client = docker.DockerClient(base_url=docker_url) if docker_url else docker.from_env()
        self.api = self.client.api
        self.agent_id = agent_id
        self.prefix = name_prefix
        self.log_config = {
            "Type": "json-file",
            "Config": {"max-size": log_max_size, "max-file": str(log_max_file)},
        }
        self.image_gc_secs = image_gc_secs
        self.stop_on_shutdown = stop_on_shutdown
        self.stop_timeout = stop_timeout
        self.images_file = Path(data_dir) / "images.json"
        self._lock = threading.Lock()
        self._gateways: dict[str, tuple[float, str | None]] = {}  # network -> (when, address)

    def container_name(self, module: str) -> str:
        return f"{self.prefix}{module}"

    # ------------------------------------------------------------------ images
    def prepare(self, spec: ModuleSpec, credentials: dict[str, RegistryCredential]) -> None:
        import docker.errors

        self._mark_used({spec.image})
        if spec.image_pull_policy == "never":
            if not self._has_image(spec.image):
                raise RuntimeFailure(f"image {spec.image} is not present and imagePullPolicy=never")
            return
        repo, tag = split_image(spec.image)
        reg = registry_of(spec.image)
        auth = None
        for cred in credentials.values():
            if cred.address.split("://")[-1].rstrip("/") == reg:
                auth = {"username": cred.username, "password": cred.password}
        try:
            for event in self.api.pull(
                repo, tag or None, auth_config=auth, stream=True, decode=True
            ):
                if isinstance(event, dict) and event.get("error"):
                    raise RuntimeFailure(f"pull {spec.image} failed: {event['error']}")
        except (RuntimeFailure, docker.errors.DockerException) as exc:
            msg = exc if isinstance(exc, RuntimeFailure) else getattr(exc, "explanation", exc)
            if self._has_image(spec.image):
                # offline or registry trouble: a local copy keeps the module running
                log.warning("pull %s failed (%s); using the local image", spec.image, msg)
                return
            if isinstance(exc, RuntimeFailure):
                raise
            raise RuntimeFailure(f"pull {spec.image} failed: {msg or exc}") from None

    def _has_image(self, image: str) -> bool:
        import docker.errors

        try:
            self.api.inspect_image(image)
            return True
        except docker.errors.ImageNotFound:
            return False

    def _mark_used(self, images: set[str]) -> dict[str, float]:
        with self._lock:
            try:
                used: dict[str, float] = json.loads(self.images_file.read_text())
            except (OSError, ValueError):
                used = {}
            now = time.time()
            for img in images:
                used[img] = now
            atomic_write_json(self.images_file, used)
            return used

    def gc(self, in_use: set[str]) -> list[str]:
        """Remove images we pulled that no deployment used for ``image_gc_secs``."""
        import docker.errors

        used = self._mark_used(in_use)
        removed = []
        for image, last in list(used.items()):
            if image in in_use or time.time() - last < self.image_gc_secs:
                continue
            try:
                self.api.remove_image(image)
                removed.append(image)
            except docker.errors.ImageNotFound:
                removed.append(image)
            except docker.errors.APIError:
                continue  # still used by a container: keep it and try later
        if removed:
            with self._lock:
                for img in removed:
                    used.pop(img, None)
                atomic_write_json(self.images_file, used)
        return removed

    # ------------------------------------------------------------------ networks
    def network_gateway(self, network: str) -> str | None:
        """The IPv4 gateway address of a docker network (None: no such network, or no IPv4),
        asked of the engine at most every ``GATEWAY_TTL_SECS`` (every module's environment asks
        at every reconcile pass). While the engine does not answer, the last address seen
        stands, so a module's environment (and with it its spec) does not change with an engine
        hiccup."""
        import docker.errors
        import requests

        seen = self._gateways.get(network)
        if seen is not None and time.monotonic() - seen[0] < GATEWAY_TTL_SECS:
            return seen[1]
        try:
            info = self.api.inspect_network(network)
        except docker.errors.NotFound:
            info = {}
        except (docker.errors.DockerException, requests.RequestException) as exc:
            log.debug("network %s not inspected (%s)", network, exc)
            return None if seen is None else seen[1]
        address = gateway_of(info)
        self._gateways[network] = (time.monotonic(), address)
        return address

    # ------------------------------------------------------------------ containers
    def create(self, spec: ModuleSpec) -> None:
        import docker.errors

        config: dict[str, Any] = json.loads(json.dumps(spec.create_options))
        config["Image"] = spec.image
        module_env, binds = container_workload(spec.env)
        env = {e.split("=", 1)[0]: e for e in config.get("Env") or []}
        env.update({k: f"{k}={v}" for k, v in module_env.items()})
        config["Env"] = list(env.values())
        labels = dict(config.get("Labels") or {})
        labels.update(
            {
                LABEL_AGENT: self.agent_id,
                LABEL_MODULE: spec.name,
                LABEL_SPEC: spec.spec_hash,
                LABEL_VERSION: spec.version,
            }
        )
        config["Labels"] = labels
        host = dict(config.get("HostConfig") or {})
        host.setdefault("LogConfig", self.log_config)
        host["RestartPolicy"] = {"Name": "no"}
        if binds:
            host["Binds"] = [*(host.get("Binds") or []), *binds]
        config["HostConfig"] = host
        name = self.container_name(spec.name)
        try:
            self.api.create_container_from_config(config, name=name)
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # a leftover with our name: replace it
                self.api.remove_container(name, force=True)
                self.api.create_container_from_config(config, name=name)
            else:
                raise RuntimeFailure(f"create failed: {exc.explanation or exc}") from None

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        import docker.errors

        try:
            return fn(*args, **kw)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise RuntimeFailure(str(exc.explanation or exc)) from None

    def start(self, name: str) -> None:
        self._call(self.api.start, self.container_name(name))

    def stop(self, name: str, timeout: float = 10.0) -> None:
        self._call(self.api.stop, self.container_name(name), timeout=int(timeout))

    def remove(self, name: str) -> None:
        self._call(self.api.remove_container, self.container_name(name), force=True)

    def _state(self, info: dict[str, Any]) -> ModuleState:
        state = info.get("State", {})
        labels = info.get("Config", {}).get("Labels") or {}
        health = (state.get("Health") or {}).get("Status")
        running = bool(state.get("Running")) and not state.get("Restarting")
        return ModuleState(
            name=labels.get(LABEL_MODULE, ""),
            running=running,
            spec_hash=labels.get(LABEL_SPEC, ""),
            exit_code=None if running else int(state.get("ExitCode", 0)),
            started_at=_parse_time(state.get("StartedAt")),
            finished_at=_parse_time(state.get("FinishedAt")),
            health=health,
            image_hash=info.get("Image", ""),
            ident=info.get("Id", "")[:12],
        )

    def status(self, name: str) -> ModuleState | None:
        info = self._call(self.api.inspect_container, self.container_name(name))
        return self._state(info) if info else None

    def _ours(self) -> list[dict[str, Any]]:
        filters = {"label": f"{LABEL_AGENT}={self.agent_id}"}
        return list(self.api.containers(all=True, filters=filters))

    def modules(self) -> dict[str, ModuleState]:
        out: dict[str, ModuleState] = {}
        for c in self._ours():
            info = self._call(self.api.inspect_container, c["Id"])
            if info:
                st = self._state(info)
                out[st.name] = st
        return out

    def logs(
        self,
        name: str,
        tail: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[LogLine]:
        kw: dict[str, Any] = {"timestamps": True, "tail": tail if tail else "all"}
        if since is not None:
            kw["since"] = int(since)
        if until is not None:
            kw["until"] = int(until) + 1
        raw = self._call(self.api.logs, self.container_name(name), **kw)
        lines: list[LogLine] = []
        for line in (raw or b"").decode("utf-8", "replace").splitlines():
            ts, _, text = line.partition(" ")
            t = _parse_time(ts) or utc_now()
            if until is not None and t.timestamp() > until:
                continue
            lines.append(LogLine(t, "stdout", text))
        return lines

    def adopt(self, desired: dict[str, ModuleSpec]) -> None:
        """Keep our containers that match a desired module (by name); remove every other one."""
        seen: set[str] = set()
        for c in self._ours():
            module = (c.get("Labels") or {}).get(LABEL_MODULE, "")
            names = [n.lstrip("/") for n in c.get("Names") or []]
            expected = self.container_name(module)
            if module in desired and expected in names and module not in seen:
                seen.add(module)
                continue
            self._call(self.api.remove_container, c["Id"], force=True)

    def shutdown(self, stop_modules: bool = False) -> None:
        if stop_modules or self.stop_on_shutdown:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(8) as pool:
                for c in self._ours():
                    pool.submit(self._call, self.api.stop, c["Id"], timeout=self.stop_timeout)
        self.client.close()
