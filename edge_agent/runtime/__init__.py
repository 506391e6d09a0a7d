"""Module runtimes: docker containers and host processes behind one interface."""

from edge_agent.runtime.base import LogLine, ModuleSpec, ModuleState, Runtime, RuntimeFailure

__all__ = ["LogLine", "ModuleSpec", "ModuleState", "Runtime", "RuntimeFailure"]
