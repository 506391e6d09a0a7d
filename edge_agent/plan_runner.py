"""Runs a ``Plan``'s commands against the runtimes: its stages one after another (removals, then
``startupOrder`` groups, lower first, each group once the earlier one's commands are done),
different modules of a stage in parallel, one module's commands in sequence up to the first
failure. Each module's outcome is reported as soon as its commands end, so its record can be
saved at once and the next plan sees a failure (a failed pull or create is retried with
backoff; the other modules go on).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import assert_never

from edge_agent.planner import Command, Create, Plan, Remove, Restart, Start, Stop
from edge_agent.runtime.base import ModuleState, Runtime


@dataclass(frozen=True)
class Outcome:
    """How one module's commands of a stage ended."""

    module: str
    commands: tuple[Command, ...]
    failed_at: int | None = None  # index into commands of the one that failed
    error: str = ""
    state: ModuleState | None = None  # the runtime's observation after all succeeded


class PlanRunner:
    def __init__(self, runtimes: dict[str, Runtime], workers: int = 4) -> None:
        self.runtimes = runtimes
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")

    def run(self, plan: Plan, report: Callable[[Outcome], None]) -> list[Outcome]:
        """Run every stage; ``report`` is called (from a worker thread) for each module as
        soon as its commands end. Returns the outcomes in plan order."""
        outcomes: list[Outcome] = []
        for stage in plan.stages:
            by_module: dict[str, list[Command]] = {}
            for command in stage.commands:
                by_module.setdefault(command.module, []).append(command)
            futures = [
                self._pool.submit(self._run_module, name, tuple(commands), report)
                for name, commands in by_module.items()
            ]
            outcomes.extend(f.result() for f in futures)
        return outcomes

    def _run_module(
        self, name: str, commands: tuple[Command, ...], report: Callable[[Outcome], None]
    ) -> Outcome:
        outcome = Outcome(name, commands)
        for i, command in enumerate(commands):
            try:
                self.execute(command)
            except Exception as exc:  # one module's trouble never stops the others
                outcome = Outcome(name, commands, i, str(exc) or type(exc).__name__)
                break
        else:
            last = commands[-1]
            if not isinstance(last, Remove):
                outcome = Outcome(name, commands, state=self.runtimes[last.runtime].status(name))
        report(outcome)
        return outcome

    def execute(self, command: Command) -> None:
        """Carry out one command; raises what the runtime raised."""
        rt = self.runtimes[command.runtime]
        name = command.module
        if isinstance(command, Remove):
            rt.stop(name, command.timeout)
            rt.remove(name)
        elif isinstance(command, Create):
            try:
                rt.prepare(command.spec, dict(command.credentials))
                rt.create(command.spec)
                if command.start:
                    rt.start(name)
            except Exception:
                with suppress(Exception):  # leave no half-made module behind
                    rt.remove(name)
                raise
        elif isinstance(command, Start):
            rt.start(name)
        elif isinstance(command, Stop):
            rt.stop(name, command.timeout)
        elif isinstance(command, Restart):
            rt.stop(name, command.timeout)
            rt.start(name)
        else:
            assert_never(command)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
