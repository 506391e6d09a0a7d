"""Every module's own workload API socket, ``<run_dir>/<module>/workload.sock`` (mode 0660, in a
0750 directory): the socket a request arrives on is the caller's identity.

The directory is what a container mounts at ``/var/run/iotedge``, so it outlives the agent: a
stop removes only the sockets and the next start binds them again in the same directories, where
running containers see them. A module the deployment no longer has loses its directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from edge_agent.edgehub.credentials import ModuleIdentity
from edge_agent.edgehub.workload_server import MAX_SOCKET_PATH, WorkloadServer

log = logging.getLogger("edgefleet.edgehub")

SOCKET_NAME = "workload.sock"
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def module_dir_name(run_dir: Path, module_id: str) -> str | None:
    """The name of the module's directory under ``run_dir``: the module id when it is a plain
    file name and the socket path fits a unix socket's address, else a digest of the id; None
    when even that does not fit."""
    for name in (module_id, hashlib.sha256(module_id.encode()).hexdigest()[:16]):
        fits = len(os.fsencode(run_dir / name / SOCKET_NAME)) <= MAX_SOCKET_PATH
        if fits and (name != module_id or _PLAIN.fullmatch(name)):
            return name
    return None


class WorkloadSockets:
    """The workload API sockets of the modules (``ensure``), served between ``start`` and
    ``stop``."""

    def __init__(
        self,
        run_dir: Path,
        trust_bundle: Callable[[], str],
        identity_of: Callable[[str], ModuleIdentity | None],
    ) -> None:
        self.run_dir = run_dir
        self._trust_bundle = trust_bundle
        self._identity_of = identity_of
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._servers: dict[str, WorkloadServer] = {}
        self._running = False
        self._warned: set[str] = set()  # modules whose socket failed: logged once

    def path(self, module_id: str) -> Path | None:
        """The module's socket (None: no path short enough)."""
        name = module_dir_name(self.run_dir, module_id)
        return None if name is None else self.run_dir / name / SOCKET_NAME

    def ensure(self, module_id: str) -> str:
        """The module's workload URI (``unix://...``), its socket served from now on while the
        sockets run; "" when the module can have no socket (logged)."""
        path = self.path(module_id)
        with self._lock:
            if path is None:
                self._warn(
                    module_id,
                    "edge hub: no workload socket for module %s: a path under %s is longer than "
                    "a unix socket allows (%d bytes)",
                    module_id,
                    self.run_dir,
                    MAX_SOCKET_PATH,
                )
                return ""
            self._wanted.add(module_id)
            if self._running:
                self._serve(module_id, path)
        return f"unix://{path}"

    def start(self, modules: Iterable[str] = ()) -> None:
        """Serve the sockets asked for so far, and those of ``modules`` whose directory is still
        there (modules of the last run, whose containers may still be running)."""
        with self._lock:
            self._running = True
            for module_id in modules:
                path = self.path(module_id)
                if path is not None and path.parent.is_dir():
                    self._wanted.add(module_id)
            for module_id in sorted(self._wanted):
                path = self.path(module_id)
                if path is not None:
                    self._serve(module_id, path)

    def _serve(self, module_id: str, path: Path) -> None:
        if module_id in self._servers:
            return
        server = WorkloadServer(path, module_id, self._trust_bundle, self._identity_of)
        try:
            path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            os.chmod(path.parent, 0o750)
            server.start()
        except OSError as exc:
            self._warn(
                module_id,
                "edge hub: no workload API for module %s at %s (%s)",
                module_id,
                path,
                exc,
            )
            return
        self._servers[module_id] = server
        self._warned.discard(module_id)

    def _warn(self, module_id: str, message: str, *args: object) -> None:
        """Log a module's socket trouble once (every reconcile pass asks again); under the
        lock."""
        level = logging.DEBUG if module_id in self._warned else logging.WARNING
        self._warned.add(module_id)
        log.log(level, message, *args)

    def retain(self, modules: Iterable[str]) -> None:
        """Keep the sockets of ``modules`` only: every other socket and module directory under
        the run directory goes."""
        keep = set(modules)
        with self._lock:
            _stop_all([self._servers.pop(m) for m in self._wanted - keep if m in self._servers])
            self._wanted &= keep
            names = {module_dir_name(self.run_dir, m) for m in keep}
            try:
                entries = list(self.run_dir.iterdir())
            except OSError:
                return
            for entry in entries:
                if entry.name in names:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop serving; the sockets go, their directories stay (see the module docstring)."""
        with self._lock:
            self._running = False
            _stop_all(list(self._servers.values()))
            self._servers.clear()


def _stop_all(servers: list[WorkloadServer]) -> None:
    """Stop servers all at once (each waits up to its poll interval to stop)."""
    stopping = [threading.Thread(target=server.stop) for server in servers]
    for thread in stopping:
        thread.start()
    for thread in stopping:
        thread.join()
