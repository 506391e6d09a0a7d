"""check_deployment / check_configuration_content and `edgefleet deployment validate`."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgefleet.deployment_check import (
    check_configuration_content,
    check_deployment,
    content_kind,
)
from edgefleet.genconfig import genconfig

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus" / "manifests"
if not CORPUS.is_dir():
    CORPUS = Path("/work/wt/shared/corpus/manifests")

AML_VARS = {
    "ACR_NAME": "myacr",
    "ACR_PASSWORD": "secret",
    "HOST_URL": "myacr.azurecr.io/host:1",
    "CLIENT_URL": "myacr.azurecr.io/client:1",
    "HOST_STATUS": "running",
    "CLIENT_STATUS": "stopped",
    "INPUT_TENSOR": "in",
    "OUTPUT_TENSOR": "out",
    "DEVICE_CONNECTION_STRING": "HostName=h;DeviceId=d;SharedAccessKey=k",
    "FPGA_IMAGE_ACR": "myacr.azurecr.io/fpga:1",
}
ML_VARS = {
    "CONTAINER_REGISTRY_USERNAME_": "user",
    "CONTAINER_REGISTRY_PASSWORD_": "pass",
    "MODULES.turbofanRouter": "reg.io/router:1",
    "MODULES.avroFileWriter": "reg.io/avro:1",
}
DEV_VARS = {
    "EDGEAGENT_SCHEMA_VERSION": "1.1",
    "EDGEHUB_SCHEMA_VERSION": "1.2",
    "EDGE_RUNTIME_VERSION": "1.4",
}

CLI_FIXTURES = "Azure__azure-iot-cli-extension__azext_iot__tests__iothub__configurations__"
CLI_V11 = CLI_FIXTURES + "test_edge_deployment_ea_v11"
CLI_BAD = CLI_FIXTURES + "test_edge_deployment_malformed"

# file prefix -> (valid as is, kind, variables that make it valid, needs genconfig)
CORPUS_VERDICTS: dict[str, tuple[bool, str, dict[str, str] | None, bool]] = {
    "Azure__iotedge__e2e_deployment_files__quickstart": (True, "base", None, False),
    "Azure__iotedge__e2e_deployment_files__module_to_module": (True, "base", None, False),
    "Azure__iotedge__e2e_deployment_files__runtime_only": (True, "base", None, False),
    "SchemaStore__": (True, "base", None, False),
    "Azure-Samples__aml-hardware-accelerated-models__deploy-to-databox-edge__deployment": (
        False,
        "base",
        AML_VARS,
        False,
    ),
    "Azure-Samples__aml-hardware-accelerated-models__deploy-to-databox-edge__iotedge": (
        False,
        "base",
        AML_VARS,
        False,
    ),
    "Azure__iotedgedev__": (False, "base", DEV_VARS, True),
    "Azure-Samples__iot-edge-deployment-engine__manifests__AutomaticDeployment": (
        True,
        "base",
        None,
        False,
    ),
    "Azure-Samples__iot-edge-deployment-engine__manifests__LayeredDeployment": (
        True,
        "layered",
        None,
        False,
    ),
    "Azure-Samples__IoTEdgeAndMlSample__": (False, "base", ML_VARS, True),
    CLI_V11: (
        True,
        "base",
        None,
        False,
    ),
    CLI_BAD: (
        False,
        "base",
        None,
        False,
    ),
}


def corpus_file(prefix: str) -> Path:
    matches = [p for p in CORPUS.glob("*.json") if p.name.startswith(prefix)]
    assert len(matches) == 1, (prefix, matches)
    return matches[0]


def load(prefix: str) -> dict[str, Any]:
    return json.loads(corpus_file(prefix).read_text())


def test_every_corpus_file_has_an_expected_verdict() -> None:
    files = {p.name for p in CORPUS.glob("*.json")}
    covered = {corpus_file(prefix).name for prefix in CORPUS_VERDICTS}
    assert files == covered


@pytest.mark.parametrize("prefix", list(CORPUS_VERDICTS))
def test_corpus_verdicts(prefix: str) -> None:
    valid, kind, variables, needs_genconfig = CORPUS_VERDICTS[prefix]
    doc = load(prefix)
    verdict = check_deployment(doc)
    assert verdict.valid is valid, verdict.errors
    assert verdict.kind == kind
    if variables is None:
        return
    # a template: every error names a placeholder, and the right variables make it deployable
    assert all("template variable" in e.message for e in verdict.errors)
    if needs_genconfig:
        expanded = check_deployment(genconfig(doc, variables))
    else:
        expanded = check_deployment(doc, variables=variables)
    assert expanded.valid, expanded.errors
    assert expanded.kind == kind


def test_placeholders_named_with_their_paths() -> None:
    verdict = check_deployment(load("Azure__iotedgedev__"))
    found = {(e.path, e.message.split()[2]) for e in verdict.errors}
    assert (
        "modulesContent.$edgeAgent.properties.desired.schemaVersion",
        "EDGEAGENT_SCHEMA_VERSION",
    ) in found
    assert (
        "modulesContent.$edgeHub.properties.desired.schemaVersion",
        "EDGEHUB_SCHEMA_VERSION",
    ) in found


def test_malformed_fixture_errors_point_at_the_fields() -> None:
    verdict = check_deployment(load(CLI_BAD))
    paths = {e.path for e in verdict.errors}
    assert (
        "modulesContent.$edgeAgent.properties.desired.modules.mongo-server.restartPolicy" in paths
    )


# --------------------------------------------------------------------------- error classes


def base() -> dict[str, Any]:
    return copy.deepcopy(load(CLI_V11))


def agent(doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
    return result


def hub(doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = doc["modulesContent"]["$edgeHub"]["properties.desired"]
    return result


MOD = "modulesContent.$edgeAgent.properties.desired.modules.filtermodule"


def errors(doc: Any, **kw: Any) -> dict[str, str]:
    verdict = check_deployment(doc, **kw)
    assert not verdict.valid
    return {e.path: e.message for e in verdict.errors}


def test_chunk_over_512_characters() -> None:
    doc = base()
    opts = json.dumps({"Env": ["X=" + "a" * 600]})
    agent(doc)["modules"]["filtermodule"]["settings"]["createOptions"] = opts
    assert "512" in errors(doc)[MOD + ".settings.createOptions"]


def test_chunks_split_at_512_are_valid_and_gaps_are_not() -> None:
    doc = base()
    opts = json.dumps({"Env": ["X=" + "a" * 700]})
    settings = agent(doc)["modules"]["filtermodule"]["settings"]
    settings["createOptions"], settings["createOptions01"] = opts[:512], opts[512:]
    assert check_deployment(doc).valid
    settings["createOptions02"] = settings.pop("createOptions01")
    assert "createOptions01" in next(iter(errors(doc)))


def test_joined_create_options_must_be_json() -> None:
    doc = base()
    settings = agent(doc)["modules"]["filtermodule"]["settings"]
    settings["createOptions"], settings["createOptions01"] = '{"Env": [', '"A=1"'
    assert "not valid JSON" in errors(doc)[MOD + ".settings.createOptions"]


def test_object_create_options_only_in_templates() -> None:
    doc = base()
    agent(doc)["modules"]["filtermodule"]["settings"]["createOptions"] = {"Env": ["A=1"]}
    assert "genconfig" in errors(doc)[MOD + ".settings.createOptions"]


def test_unsupported_schema_versions() -> None:
    doc = base()
    agent(doc)["schemaVersion"] = "2.0"
    hub(doc)["schemaVersion"] = "0.9"
    found = errors(doc)
    assert "not supported" in found["modulesContent.$edgeAgent.properties.desired.schemaVersion"]
    assert "not supported" in found["modulesContent.$edgeHub.properties.desired.schemaVersion"]


def test_route_objects_need_hub_schema_1_1() -> None:
    doc = base()
    hub(doc)["schemaVersion"] = "1.0"
    assert any("routes" in p for p in errors(doc))


def test_bad_route_object() -> None:
    doc = base()
    hub(doc)["routes"]["sensorToFilter"]["priority"] = 12
    assert "modulesContent.$edgeHub.properties.desired.routes.sensorToFilter.priority" in errors(
        doc
    )
    doc = base()
    hub(doc)["routes"]["x"] = {"priority": 1}
    assert any(
        p.startswith("modulesContent.$edgeHub.properties.desired.routes.x") for p in errors(doc)
    )


def test_layered_content_given_as_base_and_base_flagged_layered() -> None:
    layered = load("Azure-Samples__iot-edge-deployment-engine__manifests__LayeredDeployment")
    assert "layered" in next(iter(errors(layered, layered=False).values()))
    assert check_deployment(layered, layered=True).valid
    assert "flagged as layered" in next(iter(errors(base(), layered=True).values()))
    assert check_deployment(base(), layered=False).valid


def test_layered_module_and_route_checked_by_target() -> None:
    doc = load("Azure-Samples__iot-edge-deployment-engine__manifests__LayeredDeployment")
    mc = doc["content"]["modulesContent"]
    mc["$edgeAgent"]["properties.desired.modules.SQLite"]["restartPolicy"] = "sometimes"
    mc["$edgeHub"]["properties.desired.routes.sqliteToIoTHub"] = {
        "route": "FROM /* INTO $upstream",
        "priority": 10,
    }
    found = errors(doc)
    assert "modulesContent.$edgeAgent.properties.desired.modules.SQLite.restartPolicy" in found
    assert "modulesContent.$edgeHub.properties.desired.routes.sqliteToIoTHub.priority" in found


def test_module_twin_desired_over_32_kb() -> None:
    doc = base()
    doc["modulesContent"]["filtermodule"] = {"properties.desired": {"blob": "x" * (33 * 1024)}}
    assert "32768" in errors(doc)["modulesContent.filtermodule.properties.desired"]


def test_too_many_modules() -> None:
    doc = base()
    template = agent(doc)["modules"]["filtermodule"]
    agent(doc)["modules"] = {f"m{i}": copy.deepcopy(template) for i in range(51)}
    assert "50" in errors(doc)["modulesContent.$edgeAgent.properties.desired.modules"]
    agent(doc)["modules"] = {f"m{i}": copy.deepcopy(template) for i in range(50)}
    assert check_deployment(doc).valid


def test_process_modules_are_valid() -> None:
    doc = base()
    agent(doc)["modules"]["worker"] = {
        "type": "process",
        "status": "running",
        "restartPolicy": "always",
        "settings": {"command": ["python", "-m", "worker"], "healthCheck": {"command": "true"}},
    }
    assert check_deployment(doc).valid
    del agent(doc)["modules"]["worker"]["settings"]["command"]
    assert (
        "command"
        in errors(doc)["modulesContent.$edgeAgent.properties.desired.modules.worker.settings"]
    )


def test_legacy_module_content_is_a_warning() -> None:
    doc = {"moduleContent": base()["modulesContent"]}
    verdict = check_deployment(doc)
    assert verdict.valid
    assert [w.path for w in verdict.warnings] == ["moduleContent"]


def test_unknown_content_keys() -> None:
    doc = {"content": {**base(), "surprise": {}}}
    assert "surprise" in errors(doc)


def test_not_a_deployment() -> None:
    assert not check_deployment([1, 2]).valid
    assert not check_deployment({"foo": 1}).valid


# --------------------------------------------------------------------------- configurations


def test_configuration_content_kinds() -> None:
    assert content_kind({"modulesContent": {}}) == "modules"
    assert content_kind({"deviceContent": {}}) == "device"
    assert content_kind({"moduleContent": {"properties.desired.x": 1}}) == "module"
    assert check_configuration_content(base(), layered=False).valid
    device = {"deviceContent": {"properties.desired.telemetry": {"interval": 5}}}
    assert check_configuration_content(device, layered=False).valid
    module = {"moduleContent": {"properties.desired.level": "debug"}}
    assert check_configuration_content(module, layered=False).valid


def test_configuration_content_errors() -> None:
    bad_key = check_configuration_content({"deviceContent": {"tags.x": 1}}, layered=False)
    assert bad_key.errors[0].path == "deviceContent.tags.x"
    unknown = check_configuration_content({"fooContent": {}}, layered=False)
    assert unknown.errors[0].path == "fooContent"
    big = {"deviceContent": {"properties.desired.blob": "x" * 40000}}
    assert not check_configuration_content(big, layered=False).valid
    layered_as_base = check_configuration_content(
        load("Azure-Samples__iot-edge-deployment-engine__manifests__LayeredDeployment")["content"],
        layered=False,
    )
    assert not layered_as_base.valid


# --------------------------------------------------------------------------- CLI


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "composition.cli", "deployment", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def test_cli_validate_json_and_exit_codes(tmp_path: Path) -> None:
    good = cli(
        "validate",
        "--json",
        str(corpus_file(CLI_V11)),
    )
    assert good.returncode == 0
    assert json.loads(good.stdout) == {"valid": True, "kind": "base", "errors": [], "warnings": []}
    bad = cli(
        "validate",
        "--json",
        str(corpus_file(CLI_BAD)),
    )
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["valid"] is False
    layered = cli(
        "validate",
        "--base",
        str(corpus_file("Azure-Samples__iot-edge-deployment-engine__manifests__LayeredDeployment")),
    )
    assert layered.returncode == 1
    assert "error" in layered.stdout


def test_cli_validate_template_with_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f'{k}="{v}"\n' for k, v in AML_VARS.items()))
    path = str(
        corpus_file(
            "Azure-Samples__aml-hardware-accelerated-models__deploy-to-databox-edge__deployment"
        )
    )
    assert cli("validate", path).returncode == 1
    assert cli("validate", "--env-file", str(env_file), path).returncode == 0


def test_cli_validate_unreadable_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("{ not: [json")
    result = cli("validate", str(junk))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
