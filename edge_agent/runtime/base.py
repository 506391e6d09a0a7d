"""The interface every module runtime implements (docker containers, host processes)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from edgefleet.manifest import RegistryCredential


class RuntimeFailure(Exception):
    """A runtime operation failed (pull, create, start); the message is reported to the hub."""


@dataclass(frozen=True)
class ModuleSpec:
    """What the agent asks a runtime to run; ``spec_hash`` identifies a deployed config."""

    name: str
    type: str  # docker | process
    version: str = "1.0"
    image: str = ""
    create_options: dict[str, object] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    working_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    image_pull_policy: str = "on-create"
    health_check: dict[str, Any] | None = None  # process modules: command, interval...

    @property
    def spec_hash(self) -> str:
        body = json.dumps(
            [
                self.type,
                self.version,
                self.image,
                self.create_options,
                self.command,
                self.working_dir,
                sorted(self.env.items()),
                self.health_check,
            ],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModuleState:
    """What a runtime observes about one of its modules."""

    name: str
    running: bool
    spec_hash: str = ""
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    health: str | None = None  # healthy | unhealthy | starting | None (no health check)
    image_hash: str = ""
    ident: str = ""  # container id or pid


@dataclass
class LogLine:
    time: datetime
    stream: str
    text: str


class Runtime(Protocol):
    kind: str

    def modules(self) -> dict[str, ModuleState]:
        """Our modules that exist now (running or not), by module name."""
        ...

    def prepare(self, spec: ModuleSpec, credentials: dict[str, RegistryCredential]) -> None:
        """Pull or check what ``create`` needs; raises RuntimeFailure on failure."""
        ...

    def create(self, spec: ModuleSpec) -> None: ...

    def start(self, name: str) -> None: ...

    def stop(self, name: str, timeout: float = 10.0) -> None: ...

    def remove(self, name: str) -> None: ...

    def status(self, name: str) -> ModuleState | None: ...

    def logs(
        self,
        name: str,
        tail: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[LogLine]: ...

    def adopt(self, desired: dict[str, ModuleSpec]) -> None:
        """At agent start: keep our modules matching ``desired``, remove other leftovers."""
        ...

    def shutdown(self, stop_modules: bool) -> None: ...

    def gc(self, in_use: set[str]) -> list[str]:
        """Remove images (or other artifacts) unused for longer than the configured time."""
        ...
