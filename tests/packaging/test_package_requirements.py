"""An entry script's own packages (``--requirements`` / ``--pip``): requirement sets and their
layer tags, the checks against the runtime's versions, the Dockerfile, the CLI's input errors
(``--accelerator`` too), and real pip runs for the user layer's install."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modules.packaging.context import (
    ImageSpec,
    Layer,
    PackageError,
    pip_failure,
    render_dockerfile,
    runtime_tag,
    site_tree,
)
from modules.packaging.requirements import (
    constraint_lines,
    gather,
    parse_requirements,
    requirement_set,
    runtime_pins,
    split_against_runtime,
)
from tests.packaging.test_package_e2e import SCORE_PY


def test_same_requirement_set_names_the_same_layer() -> None:
    one = requirement_set(["Tabulate >= 0.9", "humanize", "tabulate>=0.9"])
    assert one == ("humanize", "tabulate>=0.9")
    assert requirement_set(["humanize", "tabulate>=0.9"]) == one
    pins = constraint_lines({"numpy": "2.3.1", "pyyaml": "6.0.2"})
    assert pins == ("numpy==2.3.1", "pyyaml==6.0.2")
    tag = runtime_tag("edgefleet-runtime:azml-x", Layer("user", one, pins))
    assert tag.startswith("edgefleet-runtime:user-")
    assert tag == runtime_tag("edgefleet-runtime:azml-x", Layer("user", one, pins))
    other_set = Layer("user", ("humanize",), pins)
    other_runtime = Layer("user", one, ("numpy==2.4.0", "pyyaml==6.0.2"))
    assert runtime_tag("edgefleet-runtime:azml-x", other_set) != tag
    assert runtime_tag("edgefleet-runtime:azml-x", other_runtime) != tag
    assert runtime_tag("edgefleet-runtime:azml-y", Layer("user", one, pins)) != tag


def test_requirements_file_lines_options_and_mistakes() -> None:
    text = "# score.py's packages\n\ntabulate>=0.9  # tables\nhumanize[x]; python_version>'3'\n"
    assert parse_requirements(text, "req.txt") == [
        "tabulate>=0.9",
        'humanize[x]; python_version > "3"',
    ]
    with pytest.raises(PackageError, match=r"req.txt:2: pip options \(-r\) are not supported"):
        parse_requirements("tabulate\n-r other.txt\n", "req.txt")
    with pytest.raises(PackageError, match=r"req.txt:1: not a requirement: 'tabulate=>1'"):
        parse_requirements("tabulate=>1\n", "req.txt")
    with pytest.raises(PackageError, match=r"--pip: not a requirement: 'a b'"):
        gather([], ["a b"])


def test_runtime_packages_are_reused_or_refused_never_replaced() -> None:
    pins = {"numpy": "2.3.1", "pyyaml": "6.0.2"}
    install, notices = split_against_runtime(["tabulate>=0.9", "NumPy>=1.26", "pyyaml"], pins)
    assert install == ("tabulate>=0.9",)
    assert notices == ["NumPy 2.3.1 is already in the runtime; using it",
                       "pyyaml 6.0.2 is already in the runtime; using it"]  # fmt: skip
    with pytest.raises(PackageError) as refused:
        split_against_runtime(["tabulate", "numpy<2"], pins)
    assert str(refused.value) == (
        "requirement 'numpy<2' conflicts with the runtime's numpy 2.3.1, which the scoring "
        "server needs; the runtime's packages cannot be replaced"
    )


def test_pip_failures_are_summarized_in_one_line() -> None:
    missing = (
        "ERROR: Could not find a version that satisfies the requirement nope-xyz (from versions: "
        "none)\nERROR: No matching distribution found for nope-xyz\n"
    )
    assert pip_failure(missing, "the entry script's requirements") == (
        "pip could not install the entry script's requirements: Could not find a version that "
        "satisfies the requirement nope-xyz (from versions: none)"
    )
    conflict = (
        "ERROR: Cannot install probe because these package versions have conflicting "
        "dependencies.\n\nThe conflict is caused by:\n    probe 1.0 depends on pyyaml<5\n"
    )
    line = pip_failure(conflict, "x")
    assert "\n" not in line and line.endswith("held at the versions in the image)")


def test_user_tree_comes_last_on_the_image_path() -> None:
    wanted = ('humanize; python_version > "3"', "tabulate>=0.9")
    spec = ImageSpec("m1", "default", "fp32", "score.py", requirements=wanted)
    text = render_dockerfile("edgefleet-runtime:user-x", spec)
    assert "ENV PYTHONPATH=/opt/edgefleet/site:/opt/edgefleet/app:/opt/edgefleet/user\n" in text
    label = 'net.edgefleet.package.requirements="humanize; python_version > \\"3\\",tabulate>=0.9"'
    assert label in text  # the quotes escaped: one LABEL instruction docker parses
    assert "SCORING_ACCELERATOR" not in text


def test_package_input_errors_are_one_line(tmp_path: Path) -> None:
    base = ["models", "package", "--model", "efficientnet-lite0", "--image", "127.0.0.1:1/x:1"]
    cases = {
        ("--entry-script", str(SCORE_PY), "--requirements", str(tmp_path / "req.txt")):
            f"requirements file {tmp_path / 'req.txt'} does not exist",
        ("--pip", "tabulate"): "--requirements and --pip are for an --entry-script's own packages",
        ("--accelerator", "tpu"): "unknown image accelerator 'tpu'",
        ("--accelerator", "gpu", "--fpga-socket", "/run/f.sock"):
            "--fpga-socket maps the FPGA emulator into a cpu image",
        ("--entry-script", str(SCORE_PY), "--pip", "numpy>=1 <2"): "--pip: not a requirement",
    }  # fmt: skip
    import modules.packaging.cli  # noqa: F401 - registers `models package`
    from edgefleet.cli_apps import app

    for extra, expected in cases.items():
        done = CliRunner().invoke(app, [*base, *extra])
        assert done.exit_code == 1, (extra, done.stdout)
        (line,) = done.stderr.strip().splitlines()
        assert expected in line, (extra, line)


def _wheel(folder: Path, name: str, requires: str) -> None:
    """A tiny pure-python wheel ``name`` 1.0 that depends on ``requires``."""
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
        f"Requires-Dist: {requires}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as whl:
        for path, text in {**files, f"{dist}/RECORD": record}.items():
            whl.writestr(path, text)


def test_user_tree_holds_only_what_the_runtime_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real pip: the entry script's package is installed, its dependency that the runtime has is
    held to the runtime's version and left out; a dependency the runtime's version does not
    satisfy, or a package the index does not have, is one line."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "ef_probe", "pyyaml>=5")
    _wheel(wheels, "ef_clash", "pyyaml<5")
    monkeypatch.setenv("PIP_FIND_LINKS", f"{os.environ.get('PIP_FIND_LINKS', '')} {wheels}")
    monkeypatch.setenv("EDGEFLEET_IMAGE_SITE_CACHE", str(tmp_path / "cache"))
    pins = constraint_lines({"pyyaml": version("pyyaml")})
    tree = site_tree(("ef-probe",), lambda _m: None, pins)
    assert runtime_pins([tree]) == {"ef-probe": "1.0"}  # no second pyyaml
    code = "import ef_probe; print(ef_probe.VALUE)"
    env = {"PYTHONPATH": str(tree)}
    probe = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert probe.stdout.strip() == "42", probe.stderr
    assert site_tree(("ef-probe",), lambda m: pytest.fail(m), pins) == tree  # cached
    with pytest.raises(PackageError) as clash:
        site_tree(("ef-clash",), lambda _m: None, pins)
    assert str(clash.value).startswith("pip could not install the entry script's requirements: ")
    assert "\n" not in str(clash.value) and "held at the versions in the image" in str(clash.value)
    with pytest.raises(PackageError, match="satisfies the requirement edgefleet-no-such-pkg"):
        site_tree(("edgefleet-no-such-pkg",), lambda _m: None, pins)
