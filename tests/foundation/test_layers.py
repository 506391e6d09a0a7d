"""The packages import one way: shared ``edgefleet`` <- ``cloud_hub``, ``edge_agent``, ``modules``
<- ``composition``. Every import statement in the product is read with ``ast`` (module level,
inside functions, under ``TYPE_CHECKING``) together with ``importlib.import_module("...")`` calls.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edgefleet", "cloud_hub", "edge_agent", "modules", "composition")

# What each package may import of the project besides itself.
ALLOWED: dict[str, set[str]] = {
    "edgefleet": set(),
    "cloud_hub": {"edgefleet"},
    "edge_agent": {"edgefleet"},
    "modules": {"edgefleet"},
    "composition": {"edgefleet", "cloud_hub", "edge_agent", "modules"},
}


def imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in ``source``; relative imports resolved."""
    found: list[tuple[int, str]] = []
    package = module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif (
            isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def violations(root: Path) -> list[str]:
    bad: list[str] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            module = ".".join(relative.with_suffix("").parts)
            for line, name in imported_modules(path.read_text(), module):
                top = name.split(".")[0]
                if top in PACKAGES and top != package and top not in ALLOWED[package]:
                    bad.append(f"{relative}:{line}: {package} imports {name}")
    return bad


def test_every_import_points_down_the_layers() -> None:
    assert violations(ROOT) == []


@pytest.mark.parametrize(
    ("package", "statement"),
    [
        ("edgefleet", "from edge_agent.config import AgentConfig"),
        ("edgefleet", "import cloud_hub.db"),
        ("cloud_hub", "from edge_agent import daemon"),
        ("edge_agent", "from cloud_hub.twins import Twins"),
        ("edge_agent", "from modules.accelerators import bfp"),
        ("modules", "from edge_agent.config import AgentConfig"),
        ("modules", "from cloud_hub import events"),
        ("cloud_hub", "from composition import cli"),
    ],
)
@pytest.mark.parametrize("where", ["module", "function", "dynamic"])
def test_an_upward_import_is_caught(
    tmp_path: Path, package: str, statement: str, where: str
) -> None:
    for name in PACKAGES:
        (tmp_path / name).mkdir()
    if where == "module":
        code = statement + "\n"
    elif where == "function":
        code = f"def load() -> None:\n    {statement}\n"
    else:
        target = statement.split()[1]
        code = f"import importlib\n\nimportlib.import_module({target!r})\n"
    (tmp_path / package / "sub").mkdir()
    (tmp_path / package / "sub" / "thing.py").write_text(code)
    [problem] = violations(tmp_path)
    assert problem.startswith(f"{package}/sub/thing.py:")


def test_a_relative_import_is_resolved_within_its_package() -> None:
    names = [n for _, n in imported_modules("from ..config import X\n", "edge_agent.sub.mod")]
    assert names == ["edge_agent.config"]
