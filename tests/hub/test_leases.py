"""Leases: a periodic job runs in one hub process at a time, and moves on when that one dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cloud_hub.db import Database
from cloud_hub.leases import Lease, lock_key
from cloud_hub.mqtt.retention import MessagePruner, RetentionPolicy
from tests.support.mqtt import wait_until
from tests.support.pg import temporary_database

# another hub process: tries the lease once, prints whether it holds it, then keeps it
_OTHER_PROCESS = """
import sys, time
from cloud_hub.db import Database
from cloud_hub.leases import Lease
lease = Lease(Database(sys.argv[1]), sys.argv[2])
print("held" if lease.held() else "free", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with temporary_database("edgefleet_lease") as url:
        db = Database(url)
        db.migrate()  # the pruner's table
        db.dispose()
        yield url


@contextmanager
def other_process(url: str, name: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Another process trying lease ``name``: (the process, "held" or "free")."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS, url, name],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert proc.stdout is not None
        yield proc, proc.stdout.readline().strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_sqlite_serves_one_process_which_always_holds_its_leases(tmp_path: Path) -> None:
    lease = Lease(Database(f"sqlite:///{tmp_path / 'hub.db'}"), "job")
    assert lease.held() and lease.held()


def test_one_process_holds_a_lease_until_its_last_handle_closes(pg_url: str) -> None:
    first, second = Lease(Database(pg_url), "job"), Lease(Database(pg_url), "job")
    try:
        assert first.held() and second.held()  # two parts of one process share it
        with other_process(pg_url, "job") as (_proc, state):
            assert state == "free"
        with other_process(pg_url, "another-job") as (_proc, state):
            assert state == "held"  # names are independent
        first.close()
        assert not first.held()
        assert second.held()  # still held by this process
        second.close()
        with other_process(pg_url, "job") as (_proc, state):
            assert state == "held"
    finally:
        first.close()
        second.close()


def test_the_lease_of_a_process_killed_with_sigkill_passes_to_another(pg_url: str) -> None:
    lease = Lease(Database(pg_url), "job")
    try:
        with other_process(pg_url, "job") as (proc, state):
            assert state == "held"
            assert not lease.held() and not lease.held()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            assert wait_until(lease.held, timeout=20)
    finally:
        lease.close()


def test_a_holder_whose_connection_breaks_holds_it_no_more_until_it_takes_it_again(
    pg_url: str,
) -> None:
    import psycopg

    lease = Lease(Database(pg_url), "job")
    try:
        assert lease.held()
        admin = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(admin, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND ((classid::bigint << 32) | objid::bigint) = %s",
                (lock_key("job"),),
            ).fetchall()
        assert killed == [(True,)]
        assert not lease.held()  # the broken connection is noticed: not held
        assert lease.held()  # taken again on a new connection (nobody else wanted it)
    finally:
        lease.close()


def test_a_pruner_prunes_only_while_its_process_holds_the_lease(pg_url: str) -> None:
    passes: list[int] = []
    policy = RetentionPolicy(hours=168, interval_s=0.05)
    lease = Lease(Database(pg_url), "message-retention")
    pruner = MessagePruner(Database(pg_url), policy, on_pass=lambda: passes.append(1), lease=lease)
    with other_process(pg_url, "message-retention") as (proc, state):
        assert state == "held"
        pruner.start()
        try:
            assert not wait_until(lambda: passes, timeout=1.0)  # the other process prunes
            os.kill(proc.pid, signal.SIGKILL)
            assert wait_until(lambda: len(passes) >= 3, timeout=20)
        finally:
            pruner.stop()
    assert not lease.held()  # stopping the pruner gave the lease up
