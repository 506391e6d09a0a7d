"""The ``type: process`` runtime: modules as host processes, for hosts with no container engine.

Each module runs in its own session (process group) so stop and kill reach its children. Output
(stdout and stderr together) is read by one thread per process and written, time-stamped, to a
size-rotated log file in the data directory. A pid file per module lets a restarted agent find and
remove the processes a crashed agent left behind (no duplicates after ``kill -9``).

A module process first waits at a start gate (``START_GATE``: a ``sh`` that reads one line from
a pipe of the agent on its stdin) and runs the module's command only once the agent has written
its pid file: an agent killed in between closes the pipe, and the process exits instead of
running on as an orphan that no pid file names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import IO

from edge_agent.runtime.base import LogLine, ModuleSpec, ModuleState, RuntimeFailure
from edgefleet.files import atomic_write_json
from edgefleet.manifest import RegistryCredential
from edgefleet.utctime import parse_utc_text, utc_now, utc_text

log = logging.getLogger("edgefleet.agent.process")

# ``sh -c START_GATE sh COMMAND...``: wait for the agent's "go" on stdin, then run COMMAND with
# stdin from /dev/null
START_GATE = 'IFS= read -r go && [ "$go" = go ] && exec "$@" </dev/null'


def gated(command: list[str]) -> list[str]:
    """The argv that runs ``command`` once the start gate opens (see the module docstring)."""
    return ["/bin/sh", "-c", START_GATE, "sh", *command]


def _open_gate(fd: int, go: bool) -> None:
    """Let the gated process run its command (``go``) or exit; closes the agent's end."""
    try:
        if go:
            os.write(fd, b"go\n")
    except OSError:  # the process is gone already
        pass
    finally:
        os.close(fd)


class RotatingLog:
    """Append-only text log rotated at ``max_bytes`` keeping ``backups`` old files."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self.dropped = 0
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, line: str) -> None:
        """Append ``line``; on a full disk it is dropped (and counted): the module's output
        must still be read, or the module blocks on its pipe."""
        with self._lock:
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line)
                    size = f.tell()
            except OSError:
                self.dropped += 1
                return
            if size >= self.max_bytes:
                for i in range(self.backups - 1, 0, -1):
                    src = self.path.with_name(f"{self.path.name}.{i}")
                    if src.exists():
                        os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
                if self.backups > 0:
                    os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
                else:
                    self.path.unlink()

    def files(self) -> list[Path]:
        olds = [self.path.with_name(f"{self.path.name}.{i}") for i in range(self.backups, 0, -1)]
        return [p for p in [*olds, self.path] if p.exists()]


def _proc_start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def _file_hash(argv0: str) -> str:
    exe = shutil.which(argv0) or argv0
    h = hashlib.sha256()
    try:
        with open(exe, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return ""
    return "sha256:" + h.hexdigest()


class _Proc:
    def __init__(self, spec: ModuleSpec, log: RotatingLog) -> None:
        self.spec = spec
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.exit_code: int | None = None
        self.image_hash = _file_hash(spec.command[0]) if spec.command else ""
        self.done = threading.Event()
        self.done.set()
        self.health: str | None = None


class ProcessRuntime:
    kind = "process"

    def __init__(
        self,
        data_dir: Path,
        log_max_bytes: int = 1 << 20,
        log_backups: int = 3,
        inherit_env: bool = True,
    ) -> None:
        self.state_dir = Path(data_dir) / "process"
        self.log_dir = Path(data_dir) / "logs"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_max_bytes = log_max_bytes
        self.log_backups = log_backups
        self.inherit_env = inherit_env
        self._procs: dict[str, _Proc] = {}
        self._unsaved_pids: dict[str, tuple[int, str]] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle
    def prepare(self, spec: ModuleSpec, credentials: dict[str, RegistryCredential]) -> None:
        if not spec.command:
            raise RuntimeFailure("settings.command is empty")
        exe = spec.command[0]
        if spec.working_dir and not Path(spec.working_dir).is_dir():
            raise RuntimeFailure(f"workingDir does not exist: {spec.working_dir}")
        # a relative path runs relative to workingDir, as Popen(cwd=...) does
        local = Path(spec.working_dir or ".") / exe
        if not (shutil.which(exe) or (os.sep in exe and os.access(local, os.X_OK))):
            raise RuntimeFailure(f"command not found: {exe}")

    def create(self, spec: ModuleSpec) -> None:
        with self._lock:
            if spec.name in self._procs:
                self.remove(spec.name)
            log = RotatingLog(
                self.log_dir / f"{spec.name}.log", self.log_max_bytes, self.log_backups
            )
            self._procs[spec.name] = _Proc(spec, log)

    def start(self, name: str) -> None:
        with self._lock:
            p = self._procs.get(name)
            if p is None:
                raise RuntimeFailure(f"module {name} does not exist")
            if p.popen is not None and p.popen.poll() is None:
                return
            env = dict(os.environ) if self.inherit_env else {"PATH": os.environ.get("PATH", "")}
            env.update(p.spec.env)
            gate_read, gate_write = os.pipe()
            try:
                popen = subprocess.Popen(
                    gated(p.spec.command),
                    cwd=p.spec.working_dir or None,
                    env=env,
                    stdin=gate_read,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                _open_gate(gate_write, go=False)
                raise RuntimeFailure(f"cannot start {p.spec.command[0]}: {exc}") from exc
            finally:
                os.close(gate_read)
            p.popen = popen
            p.started_at = utc_now()
            p.finished_at = None
            p.exit_code = None
            p.done.clear()
            try:
                self._write_pidfile(name, popen.pid, p.spec.spec_hash)
            finally:
                _open_gate(gate_write, go=True)
            p.health = "starting" if p.spec.health_check else None
            targets = [self._pump, self._wait]
            if p.spec.health_check:
                targets.append(self._probe)
            for target in targets:
                threading.Thread(
                    target=target, args=(p, popen), name=f"proc-{name}", daemon=True
                ).start()

    def _pump(self, p: _Proc, popen: subprocess.Popen[bytes]) -> None:
        stream: IO[bytes] | None = popen.stdout
        if stream is None:
            return
        for raw in stream:
            now = utc_text(utc_now())
            text = raw.decode("utf-8", "replace").rstrip("\n")
            p.log.write(f"{now}\tstdout\t{text}\n")
        stream.close()

    def _wait(self, p: _Proc, popen: subprocess.Popen[bytes]) -> None:
        code = popen.wait()
        # like a container: when the main process ends, what it left behind in its group ends too
        _kill_group(popen.pid, signal.SIGKILL)
        with self._lock:
            if p.popen is popen:
                p.exit_code = code if code >= 0 else 128 - code
                p.finished_at = utc_now()
                self._pidfile(p.spec.name).unlink(missing_ok=True)
        p.done.set()

    def _probe(self, p: _Proc, popen: subprocess.Popen[bytes]) -> None:
        """Run the module's health check command every interval while it runs."""
        hc = p.spec.health_check or {}
        cmd = hc.get("command")
        argv = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd or []]
        interval = float(hc.get("intervalSecs", 30))
        timeout = float(hc.get("timeoutSecs", 10))
        retries = int(hc.get("retries", 3))
        env = dict(os.environ) if self.inherit_env else {"PATH": os.environ.get("PATH", "")}
        env.update(p.spec.env)
        failures = 0
        while not p.done.wait(interval):
            try:
                ok = (
                    subprocess.run(
                        argv,
                        cwd=p.spec.working_dir or None,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        timeout=timeout,
                    ).returncode
                    == 0
                )
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if p.popen is not popen:
                return
            failures = 0 if ok else failures + 1
            if ok:
                p.health = "healthy"
            elif failures >= retries:
                p.health = "unhealthy"

    def stop(self, name: str, timeout: float = 10.0) -> None:
        p = self._procs.get(name)
        if p is None or p.popen is None or p.popen.poll() is not None:
            return
        pid = p.popen.pid
        _kill_group(pid, signal.SIGTERM)
        if not p.done.wait(timeout):
            _kill_group(pid, signal.SIGKILL)
            p.done.wait(5)

    def remove(self, name: str) -> None:
        self.stop(name, timeout=5)
        with self._lock:
            self._procs.pop(name, None)
            self._pidfile(name).unlink(missing_ok=True)

    # ------------------------------------------------------------------ observation
    def status(self, name: str) -> ModuleState | None:
        p = self._procs.get(name)
        if p is None:
            return None
        running = p.popen is not None and not p.done.is_set()
        return ModuleState(
            name=name,
            running=running,
            spec_hash=p.spec.spec_hash,
            exit_code=None if running else p.exit_code,
            started_at=p.started_at,
            finished_at=p.finished_at,
            health=p.health if running else None,
            image_hash=p.image_hash,
            ident=str(p.popen.pid) if p.popen else "",
        )

    def modules(self) -> dict[str, ModuleState]:
        with self._lock:
            names = list(self._procs)
            if self._unsaved_pids:
                self._retry_pidfiles()
        out = {n: s for n in names if (s := self.status(n)) is not None}
        return out

    def logs(
        self,
        name: str,
        tail: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[LogLine]:
        log = RotatingLog(self.log_dir / f"{name}.log", self.log_max_bytes, self.log_backups)
        lines: list[LogLine] = []
        for path in log.files():
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:  # rotated away by the writer since files() listed it
                continue
            for raw in text.splitlines():
                ts, _, rest = raw.partition("\t")
                stream, _, text = rest.partition("\t")
                try:
                    t = parse_utc_text(ts)
                except ValueError:
                    continue
                if since is not None and t.timestamp() < since:
                    continue
                if until is not None and t.timestamp() > until:
                    continue
                lines.append(LogLine(t, stream, text))
        return lines[-tail:] if tail else lines

    # ------------------------------------------------------------------ crash recovery
    def _pidfile(self, name: str) -> Path:
        return self.state_dir / f"{name}.pid.json"

    def _write_pidfile(self, name: str, pid: int, spec_hash: str) -> None:
        """On a full disk the module runs without its pid file; ``modules`` tries again."""
        data = {"pid": pid, "ticks": _proc_start_ticks(pid), "spec": spec_hash}
        try:
            atomic_write_json(self._pidfile(name), data)
        except OSError as exc:
            if name not in self._unsaved_pids:
                log.warning("pid file of %s not written (%s); retried later", name, exc)
            self._unsaved_pids[name] = (pid, spec_hash)
            return
        self._unsaved_pids.pop(name, None)

    def _retry_pidfiles(self) -> None:
        for name, (pid, spec_hash) in list(self._unsaved_pids.items()):
            p = self._procs.get(name)
            if p is None or p.popen is None or p.popen.pid != pid or p.popen.poll() is not None:
                self._unsaved_pids.pop(name, None)
                continue
            self._write_pidfile(name, pid, spec_hash)

    def adopt(self, desired: dict[str, ModuleSpec]) -> None:
        """Processes survive an agent crash; we cannot wait() on them, so stop them cleanly."""
        for pidfile in self.state_dir.glob("*.pid.json"):
            try:
                data = json.loads(pidfile.read_text())
                pid = int(data["pid"])
            except (OSError, ValueError, KeyError):
                pidfile.unlink(missing_ok=True)
                continue
            ticks = _proc_start_ticks(pid)
            if ticks is not None and ticks == data.get("ticks"):
                _kill_group(pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while _proc_start_ticks(pid) == ticks and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _proc_start_ticks(pid) == ticks:
                    _kill_group(pid, signal.SIGKILL)
            pidfile.unlink(missing_ok=True)

    def shutdown(self, stop_modules: bool = True) -> None:
        # Processes are always stopped: nothing could supervise them once we are gone.
        with self._lock:
            names = list(self._procs)
        for n in names:
            self.stop(n, timeout=5)

    def gc(self, in_use: set[str]) -> list[str]:
        keep = {f"{n}.log" for n in in_use}
        removed = []
        for path in self.log_dir.glob("*.log"):
            if path.name not in keep and path.stem not in self._procs:
                if time.time() - path.stat().st_mtime > 86400:
                    for f in path.parent.glob(path.name + "*"):
                        f.unlink(missing_ok=True)
                    removed.append(path.stem)
        return removed


def _kill_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
