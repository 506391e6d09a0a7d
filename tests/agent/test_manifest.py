"""Manifest parsing against the real public manifests of the corpus."""

import json
from pathlib import Path

import pytest

from edgefleet.manifest import (
    ManifestError,
    load_manifest,
    parse_deployment,
    parse_edge_agent,
    parse_layer,
    substitute,
)

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "manifests"
ALL = sorted(p for p in CORPUS.glob("*.json"))
MALFORMED = [p for p in ALL if "malformed" in p.name]
LAYERED = [p for p in ALL if "Layered" in p.name]
VARS = {
    "HOST_STATUS": "running",
    "CLIENT_STATUS": "stopped",
    "EDGEAGENT_SCHEMA_VERSION": "1.1",
    "EDGEHUB_SCHEMA_VERSION": "1.2",
    "MODULES.turbofanRouter": "reg/router:1",
    "MODULES.avroFileWriter": "reg/avro:1",
    "MODULES.SampleModule": "reg/sample:1",
    "HOST_URL": "reg/host:1",
}


def test_corpus_is_there() -> None:
    assert len(ALL) >= 10 and MALFORMED and LAYERED


@pytest.mark.parametrize("path", [p for p in ALL if p not in MALFORMED + LAYERED], ids=str)
def test_every_real_manifest_parses(path: Path) -> None:
    dep = load_manifest(path, VARS)
    assert dep.edge_agent.schemaVersion in ("1.0", "1.1")
    assert dep.edge_hub is not None and dep.edge_hub.schemaVersion in ("1.0", "1.1", "1.2")
    for mod in dep.edge_agent.modules.values():
        assert mod.settings.image
        assert isinstance(mod.settings.create_options(), dict)
    # round trip through the deployed form
    again = parse_deployment({"modulesContent": dep.to_modules_content()})
    assert again == dep


def test_malformed_fails_with_path() -> None:
    with pytest.raises(ManifestError) as err:
        load_manifest(MALFORMED[0])
    assert err.value.code == 400
    assert "modulesContent.$edgeAgent.properties.desired" in str(err.value)


def test_bad_restart_policy_path() -> None:
    doc = json.loads(MALFORMED[0].read_text())
    desired = doc["content"]["modulesContent"]["$edgeAgent"]["properties.desired"]
    desired["runtime"] = {"type": "docker", "settings": {}}
    with pytest.raises(ManifestError) as err:
        parse_deployment(doc)
    assert err.value.path.endswith("modules.mongo-server.restartPolicy")


def test_layered_configuration() -> None:
    layer = parse_layer(json.loads(LAYERED[0].read_text()))
    assert layer.modules["SQLite"].settings.image == "mcr.microsoft.com/azureiotedge/sqlite:1.0"
    assert "sqliteToIoTHub" in layer.routes


def test_databox_createoptions_and_template() -> None:
    path = next(p for p in ALL if "databox-edge__deployment_template" in p.name)
    dep = load_manifest(path, VARS)
    host = dep.edge_agent.modules["azureml-host"]
    opts = host.settings.create_options()
    assert opts["HostConfig"]["Privileged"] is True
    assert opts["HostConfig"]["Devices"][0]["PathOnHost"] == "/dev/catapult0"
    assert host.settings.image == "reg/host:1"
    assert dep.edge_agent.modules["azureml-client"].status == "stopped"
    with pytest.raises(ManifestError) as err:
        load_manifest(path, {}, strict=True)
    assert err.value.code == 400 and "not set" in str(err.value)


def test_route_priority_object_form() -> None:
    path = next(p for p in ALL if "ea_v11_eh_v12" in p.name)
    dep = load_manifest(path)
    assert dep.edge_hub is not None
    assert any(r.priority or r.timeToLiveSecs for r in dep.edge_hub.routes.values())
    assert dep.edge_agent.modules["filtermodule"].startupOrder == 1


def _agent(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "schemaVersion": "1.1",
        "runtime": {"type": "docker", "settings": {}},
        "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "a"}}},
        "modules": {},
    }
    base.update(over)
    return base


def test_codes_412_417_and_chunks() -> None:
    with pytest.raises(ManifestError) as err:
        parse_edge_agent(_agent(schemaVersion="2.0"))
    assert err.value.code == 412
    with pytest.raises(ManifestError) as err:
        parse_edge_agent({"$version": 3})
    assert err.value.code == 417
    opts = json.dumps({"HostConfig": {"Binds": ["/a:/b"]}, "Env": ["X=1"]})
    mod = {
        "type": "docker",
        "settings": {
            "image": "i",
            "createOptions": opts[:10],
            "createOptions01": opts[10:20],
            "createOptions02": opts[20:],
        },
    }
    agent = parse_edge_agent(_agent(modules={"m": mod}))
    assert agent.modules["m"].settings.create_options()["HostConfig"]["Binds"] == ["/a:/b"]
    bad = {"type": "docker", "settings": {"image": "i", "createOptions": "{nope"}}
    with pytest.raises(ManifestError) as err:
        parse_edge_agent(_agent(modules={"m": bad}))
    assert err.value.code == 400 and "createOptions" in str(err.value)


def test_process_module_command_forms() -> None:
    mods = {
        "a": {"type": "process", "settings": {"command": "sh -c 'echo hi there'"}},
        "b": {"type": "process", "settings": {"command": ["sleep", "1"], "workingDir": "/tmp"}},
    }
    agent = parse_edge_agent(_agent(modules=mods))
    assert agent.modules["a"].settings.argv() == ["sh", "-c", "echo hi there"]
    assert agent.modules["b"].settings.argv() == ["sleep", "1"]
    with pytest.raises(ManifestError):
        parse_edge_agent(_agent(modules={"c": {"type": "process", "settings": {}}}))


def test_substitute_keeps_iot_edge_tokens() -> None:
    doc = {"r": "FROM /messages/* INTO $upstream", "i": "${REG}/x:$TAG", "n": "$UNSET"}
    out = substitute(doc, {"REG": "localhost:5000", "TAG": "1"})
    assert out == {"r": "FROM /messages/* INTO $upstream", "i": "localhost:5000/x:1", "n": "$UNSET"}


def test_repo_manifests_parse() -> None:
    repo = Path(__file__).resolve().parents[2] / "manifests"
    found = sorted(repo.glob("*.json"))
    assert found
    for path in found:
        dep = load_manifest(path, {})
        assert dep.edge_agent.modules


def test_braced_only_keeps_shell_variables() -> None:
    doc = {"c": "echo $HOME ${X}", "d": "${HEARTBEAT:-5}"}
    assert substitute(doc, {"HOME": "/h", "X": "1"}, braced_only=True) == {
        "c": "echo $HOME 1",
        "d": "${HEARTBEAT:-5}",
    }


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".hidden/../x", "a\x00b", "", "m" * 300])
def test_module_names_that_would_leave_the_agents_directories_are_refused(name: str) -> None:
    """Module names become file names (logs, pid files, keys): none may climb out."""
    desired = {
        "schemaVersion": "1.1",
        "runtime": {"type": "docker", "settings": {}},
        "systemModules": {
            "edgeAgent": {"type": "docker", "settings": {"image": "a"}},
            "edgeHub": {"type": "docker", "settings": {"image": "b"}},
        },
        "modules": {
            name: {
                "type": "process",
                "status": "running",
                "restartPolicy": "always",
                "settings": {"command": "true"},
            }
        },
    }
    with pytest.raises(ManifestError) as err:
        parse_edge_agent(desired)
    assert err.value.code == 400 and "modules" in err.value.path + str(err.value)
