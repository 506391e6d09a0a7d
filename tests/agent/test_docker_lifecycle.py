"""The agent daemon with the docker runtime, a real dockerd and a real registry (htpasswd)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from edge_agent.runtime.docker import LABEL_AGENT, LABEL_MODULE
from tests.support.agent import AgentProcess, manifest
from tests.support.docker import (
    TEST_LABEL,
    Registry,
    build_busybox_image,
    cleanup_label,
    docker_client,
    free_port,
    running_registry,
)
from tests.support.mqtt import wait_until

RUN = uuid.uuid4().hex[:8]


class Images:
    def __init__(self, reg: Registry) -> None:
        self.reg = reg
        base = build_busybox_image(f"edgefleet-test-bb:{RUN}", ["sleep", "1000"], run_label=RUN)
        hc = build_busybox_image(
            f"edgefleet-test-bbhc:{RUN}",
            ["sh", "-c", "touch /tmp/ok; sleep 3; rm /tmp/ok; sleep 1000"],
            healthcheck=["test", "-f", "/tmp/ok"],
            run_label=RUN,
        )
        self.v1 = reg.push(base, f"bb{RUN}", "1")
        self.v2 = reg.push(base, f"bb{RUN}", "2")
        self.hc = reg.push(hc, f"bbhc{RUN}", "1")
        client = docker_client()
        for tag in (base, hc):
            client.api.remove_image(tag)
        client.close()


@pytest.fixture(scope="module")
def images() -> Iterator[Images]:
    with running_registry() as reg:
        imgs = Images(reg)
        try:
            yield imgs
        finally:
            cleanup_label(TEST_LABEL, RUN)
            client = docker_client()
            for img in (imgs.v1, imgs.v2, imgs.hc):
                try:
                    client.api.remove_image(img, force=True)
                except Exception:
                    pass
            client.close()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    device = f"dev-{uuid.uuid4().hex[:8]}"
    a = AgentProcess(
        tmp_path,
        device,
        "docker",
        runtime={"type": "docker", "docker": {"name_prefix": f"{device}-", "image_gc_secs": 0}},
        reconcile={"gc_interval_secs": 0.5},
    )
    yield a
    if a.proc is not None and a.proc.poll() is None:
        a.stop()
    cleanup_label(LABEL_AGENT, device)


def containers(device: str, module: str | None = None) -> list[dict[str, Any]]:
    client = docker_client()
    try:
        labels = [f"{LABEL_AGENT}={device}"]
        if module:
            labels.append(f"{LABEL_MODULE}={module}")
        found = client.api.containers(all=True, filters={"label": labels})
        out = []
        for listed in found:
            try:  # a container the agent removes meanwhile is gone, not an error
                out.append(client.api.inspect_container(listed["Id"]))
            except docker.errors.NotFound:
                continue
        return out
    finally:
        client.close()


def mod(image: str, cmd: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"Cmd": cmd or ["sleep", "1000"]}
    opts.update(kw.pop("opts", {}))
    import json

    return {
        "type": "docker",
        "version": kw.pop("version", "1.0"),
        "restartPolicy": kw.pop("restartPolicy", "always"),
        "settings": {"image": image, "createOptions": json.dumps(opts)},
        **kw,
    }


def chunked(module: dict[str, Any], size: int = 40) -> dict[str, Any]:
    """Split createOptions into createOptions, createOptions01, ... as IoT Edge tools do."""
    text = module["settings"]["createOptions"]
    parts = [text[i : i + size] for i in range(0, len(text), size)]
    settings = {"image": module["settings"]["image"], "createOptions": parts[0]}
    settings.update({f"createOptions{i:02d}": part for i, part in enumerate(parts[1:], 1)})
    return {**module, "settings": settings}


def test_deploy_update_remove_gc(images: Images, agent: AgentProcess, tmp_path: Path) -> None:
    creds = images.reg.credentials()
    port = free_port()
    share = tmp_path / "share"
    share.mkdir()
    mods = {
        "web": mod(
            images.v1,
            ["sh", "-c", "echo started $GREETING; echo hi > /share/out; sleep 1000"],
            env={"GREETING": {"value": "hello"}},
            opts={"HostConfig": {"Binds": [f"{share}:/share"]}},
            startupOrder=1,
        ),
        "worker": chunked(
            mod(
                images.v1,
                startupOrder=0,
                opts={
                    "ExposedPorts": {"80/tcp": {}},
                    "HostConfig": {
                        "PortBindings": {"80/tcp": [{"HostPort": str(port)}]},
                        "Devices": [
                            {
                                "PathOnHost": "/dev/null",
                                "PathInContainer": "/dev/catapult0",
                                "CgroupPermissions": "rwm",
                            }
                        ],
                    },
                },
            )
        ),
    }
    agent.deploy(manifest(mods, creds))
    agent.start()
    web = agent.wait_status("web", "running")
    agent.wait_status("worker", "running")
    assert web["settings"]["imageHash"].startswith("sha256:")
    (info,) = containers(agent.device_id, "web")
    assert info["Name"] == f"/{agent.device_id}-web"
    assert f"{share}:/share" in info["HostConfig"]["Binds"]
    assert info["HostConfig"]["LogConfig"]["Config"]["max-size"] == "10m"
    env = info["Config"]["Env"]
    assert "GREETING=hello" in env and f"IOTEDGE_DEVICEID={agent.device_id}" in env
    assert "IOTEDGE_MODULEID=web" in env
    (worker,) = containers(agent.device_id, "worker")  # createOptions01.. chunks reassembled
    assert worker["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"] == str(port)
    assert worker["HostConfig"]["Devices"][0]["PathInContainer"] == "/dev/catapult0"
    # the shell creates the file before it writes "hi": wait for the content, not the name
    out = share / "out"
    assert wait_until(lambda: out.read_text() == "hi\n", timeout=60), out.read_text()

    # version change: the container is recreated with the new image; the old one is GC'd
    old_id = info["Id"]
    worker_id = containers(agent.device_id, "worker")[0]["Id"]
    mods["web"] = {**mods["web"], "version": "2.0"}
    mods["web"]["settings"] = {**mods["web"]["settings"], "image": images.v2}
    mods["worker"]["settings"] = {**mods["worker"]["settings"], "image": images.v2}
    agent.deploy(manifest(mods, creds))
    agent.wait_for(
        "web v2",
        lambda r: (
            r["modules"]["web"]["version"] == "2.0"
            and r["modules"]["web"]["runtimeStatus"] == "running"
            and r["modules"]["worker"]["settings"]["image"] == images.v2
            and r["modules"]["worker"]["runtimeStatus"] == "running"
        ),
    )
    (info,) = containers(agent.device_id, "web")
    assert info["Id"] != old_id and info["Config"]["Image"] == images.v2
    assert containers(agent.device_id, "worker")[0]["Id"] != worker_id
    client = docker_client()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and client.api.images(name=images.v1):
            time.sleep(0.2)
        assert client.api.images(name=images.v1) == []  # unused image collected
    finally:
        client.close()

    # remove a module; stop another
    del mods["worker"]
    mods["web"]["status"] = "stopped"
    agent.deploy(manifest(mods, creds))
    agent.wait_for("worker removed", lambda r: "worker" not in r["modules"])
    agent.wait_status("web", "stopped")
    assert containers(agent.device_id, "worker") == []
    assert containers(agent.device_id, "web")[0]["State"]["Running"] is False


def test_pull_failures_crash_and_unhealthy(images: Images, agent: AgentProcess) -> None:
    bad_creds = images.reg.credentials(password="wrong")
    mods = {
        "private": mod(images.v1),
        "typo": mod(f"{images.reg.address}/does-not-exist{RUN}:1"),
        "crash": mod(images.hc, ["sh", "-c", "echo boom; exit 2"], restartPolicy="on-failure"),
        "sick": mod(images.hc, None, restartPolicy="on-unhealthy"),
    }
    mods["sick"]["settings"]["createOptions"] = "{}"  # image CMD + HEALTHCHECK
    # the healthcheck image must be pullable: first deploy with good credentials
    agent.deploy(manifest({"sick": mods["sick"]}, images.reg.credentials()))
    agent.start()
    agent.wait_status("sick", "running")
    agent.deploy(manifest(mods, bad_creds))
    private = agent.wait_status("private", "failed")
    assert "unauthorized" in private["statusDescription"] or "auth" in private["statusDescription"]
    typo = agent.wait_status("typo", "failed")
    assert "does-not-exist" in typo["statusDescription"]
    seen: set[str] = set()

    def crash_done(r: dict[str, Any]) -> bool:
        seen.add(r["modules"]["crash"]["runtimeStatus"])
        return r["modules"]["crash"]["runtimeStatus"] == "failed"

    crash = agent.wait_for("crash failed", crash_done)["modules"]["crash"]
    assert "backoff" in seen and crash["restartCount"] == 3 and crash["exitCode"] == 2
    # HEALTHCHECK turns unhealthy after 3 s; on-unhealthy restarts the container
    agent.wait_for("sick restarted", lambda r: r["modules"]["sick"]["restartCount"] >= 1)
    # fixing the password: the failed pull is retried and the module starts
    agent.deploy(manifest(mods, images.reg.credentials()))
    agent.wait_status("private", "running")
    assert agent.module("typo")["runtimeStatus"] in ("failed", "backoff")


def test_kill9_no_duplicates_and_reboot_without_hub(images: Images, agent: AgentProcess) -> None:
    mods = {f"m{i}": mod(images.v1, startupOrder=i) for i in range(3)}
    agent.deploy(manifest(mods, images.reg.credentials()))
    agent.start()
    agent.wait_status("m0", "running")
    agent.kill9()
    agent.start()
    for n in mods:
        agent.wait_status(n, "running")
    time.sleep(1.5)  # several passes later: still one container per module
    for n in mods:
        assert len(containers(agent.device_id, n)) == 1
    assert agent.stop() == 0
    # docker modules keep running when the agent stops
    assert all(c["State"]["Running"] for c in containers(agent.device_id))
    # "reboot": containers stopped, the hub (manifest source) unreachable
    client = docker_client()
    for c in containers(agent.device_id):
        client.api.stop(c["Id"], timeout=1)
    client.close()
    agent.manifest_path.unlink()
    (agent.data_dir / "reported.json").unlink()
    agent.start()
    for n in mods:
        agent.wait_status(n, "running")
    assert len(containers(agent.device_id)) == 3
    assert all(c["State"]["Running"] for c in containers(agent.device_id))


def test_auto_runtime_switches_module_type(tmp_path: Path) -> None:
    device = f"dev-{uuid.uuid4().hex[:8]}"
    image = build_busybox_image(f"edgefleet-test-local:{RUN}", ["sleep", "1000"], run_label=RUN)
    agent = AgentProcess(
        tmp_path, device, "auto", runtime={"type": "auto", "docker": {"name_prefix": f"{device}-"}}
    )
    marker = f"{tmp_path}/module-x"
    proc_mod = {"type": "process", "settings": {"command": ["sh", "-c", "sleep 1000", marker]}}
    agent.deploy(manifest({"x": proc_mod}))
    agent.start()
    try:
        agent.wait_status("x", "running")
        assert agent.reported()["runtime"]["type"] == "docker+process"
        docker_mod = mod(image, imagePullPolicy="never")
        agent.deploy(manifest({"x": docker_mod}))
        agent.wait_for(
            "x in docker",
            lambda r: (
                r["modules"]["x"]["type"] == "docker"
                and r["modules"]["x"]["runtimeStatus"] == "running"
            ),
        )
        assert wait_until(lambda: len(containers(device, "x")) == 1, timeout=30)
        pids = [p for p in Path("/proc").iterdir() if p.name.isdigit()]
        cmdlines = []
        for p in pids:
            try:
                cmdlines.append((p / "cmdline").read_bytes().decode(errors="replace"))
            except OSError:
                pass
        assert not any(marker in c for c in cmdlines)
        # imagePullPolicy never with an image that is not here: failed, reported
        agent.deploy(manifest({"x": mod(f"edgefleet-test-absent:{RUN}", imagePullPolicy="never")}))
        x = agent.wait_status("x", "failed")
        assert "imagePullPolicy=never" in x["statusDescription"]
    finally:
        agent.stop()
        cleanup_label(LABEL_AGENT, device)
        client = docker_client()
        client.api.remove_image(image, force=True)
        client.close()


def test_create_options_policy_refuses_a_deployment_that_reaches_the_host(
    images: Images, tmp_path: Path
) -> None:
    device = f"dev-{uuid.uuid4().hex[:8]}"
    shared = tmp_path / "shared"
    shared.mkdir()
    agent = AgentProcess(
        tmp_path / "agent",
        device,
        "docker",
        runtime={"type": "docker", "docker": {"name_prefix": f"{device}-"}},
        create_options_policy={"enforce": True, "bind_sources": [str(shared)]},
    )
    creds = images.reg.credentials()
    allowed = {"app": mod(images.v1, opts={"HostConfig": {"Binds": [f"{shared}:/shared"]}})}
    try:
        agent.deploy(manifest(allowed, creds))
        agent.start()
        agent.wait_status("app", "running")
        hostile = {
            **allowed,
            "evil": mod(images.v1, opts={"HostConfig": {"Privileged": True, "Binds": ["/:/host"]}}),
        }
        agent.deploy(manifest(hostile, creds))
        rep = agent.wait_for("refusal", lambda r: r["lastDesiredStatus"]["code"] == 400)
        said = rep["lastDesiredStatus"]["description"]
        assert "modules.evil.settings.createOptions.HostConfig.Privileged" in said
        assert "modules.evil.settings.createOptions.HostConfig.Binds[0]: host path /" in said
        time.sleep(1.5)  # passes later: the box still runs what it ran, and nothing else
        assert containers(device, "evil") == []
        assert [c["State"]["Running"] for c in containers(device, "app")] == [True]
        assert "evil" not in agent.reported()["modules"]
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.stop()
        cleanup_label(LABEL_AGENT, device)
