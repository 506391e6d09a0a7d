"""The operator's createOptions allow-list: what it refuses, with which JSON path, and what it lets
through; the Data Box Edge sample from the corpus as an operator would allow it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge_agent.create_options_policy import (
    CreateOptionsPolicy,
    deployment_violations,
    under,
    violations,
)

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
ON = CreateOptionsPolicy(enforce=True)


def paths(options: dict[str, Any], policy: CreateOptionsPolicy = ON) -> list[str]:
    return [
        v.path.removeprefix("settings.createOptions.HostConfig.")
        for v in violations(options, policy)
    ]


def host(**config: Any) -> dict[str, Any]:
    return {"HostConfig": config}


def test_off_by_default_lets_everything_through() -> None:
    root = host(Privileged=True, Binds=["/:/host"], PidMode="host", CapAdd=["SYS_ADMIN"])
    assert violations(root, CreateOptionsPolicy()) == []
    assert paths(root) == ["Privileged", "PidMode", "Binds[0]", "CapAdd[0]"]


def test_plain_modules_pass_when_enforced() -> None:
    ordinary = host(
        PortBindings={"5001/tcp": [{"HostPort": "5001"}]},
        Binds=["models:/models", "cache:/cache:ro"],  # named volumes
        Mounts=[{"Type": "volume", "Source": "data", "Target": "/data"}, {"Type": "tmpfs"}],
        Memory=268435456,
        NetworkMode="bridge",
    )
    assert violations({"Env": ["A=1"], **ordinary}, ON) == []
    assert violations({}, ON) == []


@pytest.mark.parametrize(
    ("options", "where", "words"),
    [
        (host(Privileged=True), "Privileged", "allow_privileged"),
        (host(NetworkMode="host"), "NetworkMode", "allow_host_network"),
        (host(PidMode="host"), "PidMode", "allow_host_namespaces"),
        (host(UsernsMode="host"), "UsernsMode", "allow_host_namespaces"),
        (host(Binds=["/:/host"]), "Binds[0]", "host path / is not allowed"),
        (host(Binds=["/var/run/docker.sock:/var/run/docker.sock"]), "Binds[0]", "bind_sources"),
        (
            host(Mounts=[{"Type": "bind", "Source": "/etc", "Target": "/e"}]),
            "Mounts[0].Source",
            "/etc",
        ),
        (
            host(
                Mounts=[
                    {
                        "Type": "volume",
                        "Target": "/host",
                        "VolumeOptions": {
                            "DriverConfig": {
                                "Name": "local",
                                "Options": {"type": "none", "o": "bind", "device": "/"},
                            }
                        },
                    }
                ]
            ),
            "Mounts[0].VolumeOptions.DriverConfig.Options.device",
            "host path /",
        ),
        (
            host(Devices=[{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}]),
            "Devices[0].PathOnHost",
            "/dev/sda",
        ),
        (host(DeviceCgroupRules=["c 8:* rmw"]), "DeviceCgroupRules", "cgroup"),
        (host(DeviceRequests=[{"Driver": "nvidia", "Count": -1}]), "DeviceRequests", "allow_gpus"),
        (host(CapAdd=["NET_ADMIN"]), "CapAdd[0]", "capability NET_ADMIN"),
        (host(SecurityOpt=["seccomp=unconfined"]), "SecurityOpt[0]", "seccomp=unconfined"),
        (host(VolumesFrom=["other"]), "VolumesFrom", "another container"),
    ],
)
def test_each_escape_is_refused_with_its_path(
    options: dict[str, Any], where: str, words: str
) -> None:
    found = violations(options, ON)
    assert [v.path for v in found] == [f"settings.createOptions.HostConfig.{where}"]
    assert words in found[0].message


def test_bind_sources_are_prefixes_that_dot_dot_cannot_climb_out_of() -> None:
    policy = CreateOptionsPolicy(enforce=True, bind_sources=["/srv/models/", "/etc/hosts"])
    assert policy.bind_sources == ["/srv/models", "/etc/hosts"]
    assert (
        paths(
            host(Binds=["/srv/models:/m:ro", "/srv/models/a/b:/b", "/etc/hosts:/etc/hosts"]), policy
        )
        == []
    )
    escaping = ["/srv/models/../../etc:/e", "/srv/models-other:/o", "/etc/hostsx:/x", "/etc:/etc"]
    assert paths(host(Binds=escaping), policy) == ["Binds[0]", "Binds[1]", "Binds[2]", "Binds[3]"]
    assert under("/srv/models/./x", ["/srv/models"]) and not under("/srv", ["/srv/models"])
    assert under("/anything", ["/"])


def test_allowed_devices_capabilities_and_options() -> None:
    policy = CreateOptionsPolicy(
        enforce=True,
        devices=["/dev/catapult0"],
        capabilities=["cap_net_admin"],
        security_options=["no-new-privileges"],
        allow_gpus=True,
    )
    options = host(
        Devices=[{"PathOnHost": "/dev/catapult0", "PathInContainer": "/dev/fpga"}],
        CapAdd=["NET_ADMIN", "CAP_NET_ADMIN"],
        SecurityOpt=["no-new-privileges"],
        DeviceRequests=[{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}],
    )
    assert paths(options, policy) == []
    assert paths(host(CapAdd=["ALL"]), policy) == ["CapAdd[0]"]
    assert paths(host(Devices=[{"PathOnHost": "/dev/catapult1"}]), policy) == [
        "Devices[0].PathOnHost"
    ]


def test_policy_settings_are_checked() -> None:
    with pytest.raises(ValidationError, match="not an absolute host path"):
        CreateOptionsPolicy(bind_sources=["relative/dir"])
    with pytest.raises(ValidationError):
        CreateOptionsPolicy.model_validate({"enforce": True, "allow_everything": True})


def test_the_data_box_edge_sample_needs_what_it_asks_for() -> None:
    doc = json.loads((CORPUS / "accel" / "aml-ham_deployment_template.json").read_text())
    desired = doc["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
    modules = {n: json.loads(m["settings"]["createOptions"]) for n, m in desired.items()}
    refused = deployment_violations(modules, ON)
    assert refused == [
        "modules.azureml-host.settings.createOptions.HostConfig.Privileged: "
        "privileged containers are not allowed (allow_privileged)",
        "modules.azureml-host.settings.createOptions.HostConfig.Binds[0]: "
        "host path /etc/hosts is not allowed (bind_sources)",
        "modules.azureml-host.settings.createOptions.HostConfig.Devices[0].PathOnHost: "
        "host device /dev/catapult0 is not allowed (devices)",
        "modules.azureml-host.settings.createOptions.HostConfig.Devices[1].PathOnHost: "
        "host device /dev/catapult1 is not allowed (devices)",
    ]
    fpga_box = CreateOptionsPolicy(
        enforce=True,
        allow_privileged=True,
        bind_sources=["/etc/hosts"],
        devices=["/dev/catapult0", "/dev/catapult1"],
    )
    assert deployment_violations(modules, fpga_box) == []
