"""Process runtime details: exit codes, leftovers of a module, log rotation."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge_agent.runtime.base import ModuleSpec
from edge_agent.runtime.process import ProcessRuntime, _proc_start_ticks


def _wait_exit(rt: ProcessRuntime, name: str) -> int | None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = rt.status(name)
        if st is not None and not st.running:
            return st.exit_code
        time.sleep(0.05)
    raise AssertionError("module did not exit")


def test_exit_code_and_leftover_children_end_with_the_module(tmp_path: Path) -> None:
    rt = ProcessRuntime(tmp_path)
    script = "sleep 300 & echo $! > child.pid; exit 4"
    rt.create(ModuleSpec("m", "process", command=["sh", "-c", script], working_dir=str(tmp_path)))
    rt.start("m")
    assert _wait_exit(rt, "m") == 4
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while _proc_start_ticks(child) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _proc_start_ticks(child) is None
    # a signal death is reported as 128 + signal, like a shell/docker
    rt.create(ModuleSpec("k", "process", command=["sh", "-c", "kill -9 $$"]))
    rt.start("k")
    assert _wait_exit(rt, "k") == 137
    rt.shutdown()


def test_log_rotation_keeps_bounded_files(tmp_path: Path) -> None:
    rt = ProcessRuntime(tmp_path, log_max_bytes=2048, log_backups=2)
    script = "i=0; while [ $i -lt 500 ]; do echo line-$i; i=$((i+1)); done"
    rt.create(ModuleSpec("chatty", "process", command=["sh", "-c", script]))
    rt.start("chatty")
    assert _wait_exit(rt, "chatty") == 0
    deadline = time.monotonic() + 30  # the reader thread may still be draining the pipe
    while time.monotonic() < deadline and not any(
        ln.text == "line-499" for ln in rt.logs("chatty", tail=1)
    ):
        time.sleep(0.05)
    files = sorted((tmp_path / "logs").glob("chatty.log*"))
    assert [f.name for f in files] == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    assert all(f.stat().st_size < 2048 + 200 for f in files)
    lines = [ln.text for ln in rt.logs("chatty")]
    assert lines[-1] == "line-499" and "line-0" not in lines
    assert lines == sorted(lines, key=lambda t: int(t.split("-")[1]))
    assert [ln.text for ln in rt.logs("chatty", tail=2)] == ["line-498", "line-499"]


def test_relative_command_runs_in_working_dir(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\necho ran in $(pwd)\n")
    script.chmod(0o755)
    rt = ProcessRuntime(tmp_path / "data")
    spec = ModuleSpec("rel", "process", command=["./run.sh"], working_dir=str(tmp_path))
    rt.prepare(spec, {})
    rt.create(spec)
    rt.start("rel")
    assert _wait_exit(rt, "rel") == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not rt.logs("rel"):
        time.sleep(0.05)
    assert rt.logs("rel")[0].text == f"ran in {tmp_path}"


# An agent that is killed right after spawning a module's process, before its pid file is on
# disk (kill -9 at the worst moment): it prints the process id, then dies.
_AGENT_KILLED_BEFORE_PID_FILE = """
import os, signal, sys
from pathlib import Path
from edge_agent.runtime.base import ModuleSpec
from edge_agent.runtime.process import ProcessRuntime

def die(self, name, pid, spec_hash):
    print(pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

ProcessRuntime._write_pidfile = die
rt = ProcessRuntime(Path(sys.argv[1]))
command = ["sh", "-c", "echo ran > ran; exec sleep 300"]
rt.create(ModuleSpec("m", "process", command=command, working_dir=sys.argv[1]))
rt.start("m")
"""


def test_a_module_whose_agent_died_before_writing_its_pid_file_does_not_run(
    tmp_path: Path,
) -> None:
    root = Path(__file__).resolve().parents[2]
    agent = subprocess.run(
        [sys.executable, "-c", _AGENT_KILLED_BEFORE_PID_FILE, str(tmp_path)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert agent.returncode == -signal.SIGKILL, agent.stderr
    pid = int(agent.stdout.split()[0])
    try:
        deadline = time.monotonic() + 30
        while _proc_start_ticks(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        # no pid file names it, so no restarted agent could find it: it must not run on
        assert _proc_start_ticks(pid) is None
        assert not (tmp_path / "ran").exists()
        assert list((tmp_path / "process").glob("*.pid.json")) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
