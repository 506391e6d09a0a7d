"""The edgefleet CLI in-process (typer's runner): exit code, stdout, stderr."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
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


def import_detector(graph: Path, name: str, labels: list[str], store: Path, *options: str) -> Run:
    """``models import GRAPH --name NAME --kind detector --labels (LABELS) OPTIONS``."""
    labels_file = graph.with_suffix(".labels.txt")
    labels_file.write_text("\n".join(labels) + "\n")
    return cli(
        "models", "import", str(graph), "--name", name, "--kind", "detector",
        "--labels", str(labels_file), "--model-dir", str(store), *options,
    )  # fmt: skip
