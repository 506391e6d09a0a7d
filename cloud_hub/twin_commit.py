"""Group commit of twin writes from the REST API's event loop.

Concurrent PATCH/PUT twin requests are queued for one writer thread, which applies every write
waiting at that moment in one transaction (``Twins.write_batch``) and wakes the waiting requests
once per batch. On SQLite this replaces N writers contending for the database lock (the losers
sleep in SQLite's busy handler) by one writer; on both databases it spends one BEGIN/COMMIT (and
on PostgreSQL one WAL flush) per batch instead of per write. A request answers only after its
batch committed and its events were published, as an unbatched write does.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

from cloud_hub.twins import Twins, TwinWrite

log = logging.getLogger(__name__)

MAX_BATCH = 128


@dataclass
class _Job:
    write: TwinWrite
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[dict[str, Any]]


def _settle(done: list[tuple[_Job, dict[str, Any] | BaseException]]) -> None:
    """Runs on the event loop: hand each waiting request its outcome."""
    for job, outcome in done:
        if job.future.done():  # the request was cancelled (client went away)
            continue
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)


class TwinCommitter:
    """One writer thread per hub process, started on first use, stopped by ``close``."""

    def __init__(self, twins: Twins, max_batch: int = MAX_BATCH) -> None:
        self.twins = twins
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    async def write(self, write: TwinWrite) -> dict[str, Any]:
        """Apply ``write`` in the next batch; the twin JSON, or the write's error raised."""
        loop = asyncio.get_running_loop()
        job = _Job(write, loop, loop.create_future())
        self._ensure_started()
        with self._lock:
            if self._closed:
                raise RuntimeError("the twin committer is closed")
            self._queue.put(job)
        return await job.future

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._closed:
                raise RuntimeError("the twin committer is closed")
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="twin-commit", daemon=True)
                thread.start()
                self._thread = thread

    def close(self) -> None:
        """Finish the queued writes and stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(30)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            jobs = [first]
            while len(jobs) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            self._commit(jobs)

    def _commit(self, jobs: list[_Job]) -> None:
        outcomes: list[Any]
        try:
            outcomes = self.twins.write_batch([job.write for job in jobs])
        except BaseException as exc:  # write_batch reports per write; this is a bug guard
            log.exception("twin batch failed")
            outcomes = [exc] * len(jobs)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any]]] = {}
        for job, outcome in zip(jobs, outcomes, strict=True):
            by_loop.setdefault(job.loop, []).append((job, outcome))
        for loop, done in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, done)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass
