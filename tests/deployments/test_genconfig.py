"""genconfig and load_env_file, and `edgefleet deployment genconfig`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgefleet.deployment_check import check_deployment
from edgefleet.genconfig import TemplateVariableError, genconfig, load_env_file
from edgefleet.manifest import ManifestError

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus" / "manifests"
if not CORPUS.is_dir():
    CORPUS = Path("/work/wt/shared/corpus/manifests")
TEMPLATE = CORPUS / "Azure__iotedgedev__iotedgedev__template__deployment.template.json"
VARS = {
    "EDGEAGENT_SCHEMA_VERSION": "1.1",
    "EDGEHUB_SCHEMA_VERSION": "1.2",
    "EDGE_RUNTIME_VERSION": "1.4",
}


def template_with_long_options() -> tuple[dict, dict]:
    doc = json.loads(TEMPLATE.read_text())
    options = {"Env": [f"VAR{i}={'v' * 40}" for i in range(25)], "HostConfig": {"Privileged": True}}
    doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["tempSensor"]["settings"][
        "createOptions"
    ] = options
    return doc, options


def test_iotedgedev_template_becomes_a_valid_chunked_deployment() -> None:
    doc, options = template_with_long_options()
    out = genconfig(doc, VARS)
    assert "$schema-template" not in out
    assert check_deployment(out).valid
    desired = out["modulesContent"]["$edgeAgent"]["properties.desired"]
    assert desired["schemaVersion"] == "1.1"
    settings = desired["modules"]["tempSensor"]["settings"]
    keys = sorted(k for k in settings if k.startswith("createOptions"))
    assert keys == ["createOptions", "createOptions01", "createOptions02"]
    assert all(len(settings[k]) <= 512 for k in keys)
    assert len(settings["createOptions"]) == 512
    assert json.loads("".join(settings[k] for k in keys)) == options
    hub = desired["systemModules"]["edgeHub"]["settings"]
    assert json.loads(hub["createOptions"])["HostConfig"]["PortBindings"]["443/tcp"]
    assert desired["systemModules"]["edgeAgent"]["settings"]["createOptions"] == "{}"
    assert desired["systemModules"]["edgeHub"]["settings"]["image"].endswith(":1.4")


def test_template_itself_is_untouched() -> None:
    doc, _ = template_with_long_options()
    before = json.dumps(doc)
    genconfig(doc, VARS)
    assert json.dumps(doc) == before


def test_missing_variables_are_all_named() -> None:
    with pytest.raises(TemplateVariableError) as info:
        genconfig(json.loads(TEMPLATE.read_text()), {"EDGE_RUNTIME_VERSION": "1.4"})
    assert info.value.names == ["EDGEAGENT_SCHEMA_VERSION", "EDGEHUB_SCHEMA_VERSION"]
    assert isinstance(info.value, ManifestError)


def test_create_options_beyond_eight_chunks_is_an_error() -> None:
    doc, _ = template_with_long_options()
    settings = doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["tempSensor"][
        "settings"
    ]
    settings["createOptions"] = {"Env": ["X=" + "x" * 5000]}
    with pytest.raises(ManifestError, match="createOptions"):
        genconfig(doc, VARS)


def test_load_env_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# comment\nA=1\nB=\"two words\"\nexport C='3'\n\nD=\n")
    assert load_env_file(env) == {"A": "1", "B": "two words", "C": "3", "D": ""}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "composition.cli", "deployment", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_genconfig_writes_a_deployment(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("".join(f"{k}={v}\n" for k, v in VARS.items()))
    out = tmp_path / "deployment.json"
    result = cli("genconfig", str(TEMPLATE), "--env-file", str(env), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert check_deployment(json.loads(out.read_text())).valid
    assert cli("validate", str(out)).returncode == 0
    stdout = cli("genconfig", str(TEMPLATE), "--env-file", str(env), "--json")
    assert stdout.returncode == 0
    assert json.loads(stdout.stdout) == json.loads(out.read_text())


def test_cli_genconfig_names_missing_variables(tmp_path: Path) -> None:
    result = cli("genconfig", str(TEMPLATE))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: template variables not set: EDGEAGENT_SCHEMA_VERSION, EDGEHUB_SCHEMA_VERSION, "
        "EDGE_RUNTIME_VERSION"
    ]
