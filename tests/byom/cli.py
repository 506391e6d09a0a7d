"""The edgefleet CLI in-process (typer's runner): exit code, stdout, stderr."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from typer.testing import CliRunner


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


def cli(*args: str) -> Run:
    from composition.cli import app

    result = CliRunner().invoke(app, list(args))
    return Run(result.exit_code, result.stdout, result.stderr)
