"""``edgefleet models package`` end to end: build once, push to a real registry (htpasswd), deploy
with registryCredentials to an agent with the docker runtime, then Azure ML's PredictionClient,
``POST /score`` (an unmodified score.py under azmlinfsrv) and the Open Inference Protocol answer
from inside the containers, on the CPU and with the FPGA emulator's socket mapped in.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.runtime.docker import LABEL_AGENT
from modules.accelerators.fpga.client import DeviceProcess, start_device_process
from tests.scoring.conftest import CATS, ESPRESSO, KEYS
from tests.support.agent import ROOT, AgentProcess, manifest
from tests.support.docker import Registry, cleanup_label, docker_client, free_port, running_registry
from tests.support.mqtt import wait_until

VENV = Path(os.environ.get("EDGEFLEET_ACCEL_VENV", "/var/cache/edgefleet/venv-accel"))
ACCEL_CLIENT = ROOT / "tests" / "scoring" / "accel_client.py"
SCORE_PY = Path(__file__).with_name("fixtures") / "score.py"
SCORE_REQUIREMENTS = SCORE_PY.with_name("requirements.txt")
RUN = uuid.uuid4().hex[:8]


def edgefleet(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "composition.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )


@dataclass
class Packaged:
    reg: Registry
    image: str
    result: dict[str, Any]


@pytest.fixture(scope="module")
def packaged(model_dir: Path) -> Iterator[Packaged]:
    with running_registry() as reg:
        image = f"{reg.address}/ef-score{RUN}:1"
        done = edgefleet(
            "models", "package", "--model", "efficientnet-lite0", "--model-dir", str(model_dir),
            "--entry-script", str(SCORE_PY), "--requirements", str(SCORE_REQUIREMENTS),
            "--image", image, "--push",
            "--registry-user", reg.user, "--registry-password", reg.password, "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout)
        client = docker_client()
        try:
            client.api.remove_image(image, force=True)  # the agent must pull it
        finally:
            client.close()
        try:
            yield Packaged(reg, image, result)
        finally:  # every image of this registry that the tests or the agent left here
            client = docker_client()
            try:
                for found in client.images.list(name=f"{reg.address}/*"):
                    for tag in found.tags:
                        client.api.remove_image(tag, force=True)
            finally:
                client.close()


@dataclass
class Deployed:
    agent: AgentProcess
    mods: dict[str, Any]
    ports: dict[str, tuple[int, int]]  # module -> (grpc, http) host ports
    device: DeviceProcess


def scoring_module(snippet: dict[str, Any], grpc_port: int, http_port: int) -> dict[str, Any]:
    """The snippet's module with free host ports and the test's keys filled in."""
    module = json.loads(json.dumps(snippet["modules"]["scoring"]))
    options = json.loads(module["settings"]["createOptions"])
    bindings = options["HostConfig"]["PortBindings"]
    bindings["50051/tcp"] = [{"HostIp": "127.0.0.1", "HostPort": str(grpc_port)}]
    bindings["5001/tcp"] = [{"HostIp": "127.0.0.1", "HostPort": str(http_port)}]
    module["settings"]["createOptions"] = json.dumps(options)
    module["env"]["SCORING_PRIMARY_KEY"] = {"value": KEYS[0]}
    module["env"]["SCORING_SECONDARY_KEY"] = {"value": KEYS[1]}
    return dict(module)


def wait_http(port: int) -> None:
    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_until(up, timeout=90), f"nothing answers on {port}"


@pytest.fixture(scope="module")
def deployed(
    packaged: Packaged, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    sock_dir = Path(tempfile.mkdtemp(prefix="ef-pkg-fpga-"))  # short: a UNIX socket path
    device = start_device_process(
        "fpga5", sock_dir / "fpga5.sock", model_dir=model_dir, flash_ms=20
    )
    snippet = packaged.result["snippet"]
    ports = {m: (free_port(), free_port()) for m in ("cpu", "fpga")}
    mods = {m: scoring_module(snippet, *ports[m]) for m in ports}
    cpu_opts = json.loads(mods["cpu"]["settings"]["createOptions"])
    del cpu_opts["HostConfig"]["Binds"]
    mods["cpu"]["settings"]["createOptions"] = json.dumps(cpu_opts)
    del mods["cpu"]["env"]["EDGEFLEET_FPGA_DEVICE"]
    fpga_opts = json.loads(mods["fpga"]["settings"]["createOptions"])
    fpga_opts["HostConfig"]["Binds"] = [f"{sock_dir}:/run/edgefleet-fpga"]
    mods["fpga"]["settings"]["createOptions"] = json.dumps(fpga_opts)
    mods["fpga"]["env"]["EDGEFLEET_FPGA_DEVICE"] = {"value": "/run/edgefleet-fpga/fpga5.sock"}
    creds = snippet["runtime"]["settings"]["registryCredentials"]
    (name,) = creds
    creds[name]["password"] = packaged.reg.password
    device_id = f"dev-{RUN}"
    agent = AgentProcess(
        tmp_path_factory.mktemp("agent"),
        device_id,
        "docker",
        runtime={"type": "docker", "docker": {"name_prefix": f"{device_id}-", "image_gc_secs": 0}},
    )
    agent.deploy(manifest(mods, creds))
    agent.start()
    try:
        for m in mods:
            agent.wait_status(m, "running", timeout=180)
        for _grpc, http in ports.values():
            wait_http(http)
        yield Deployed(agent, mods, ports, device)
    finally:
        agent.stop()
        cleanup_label(LABEL_AGENT, device_id)
        device.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def prediction_client(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    python = VENV / "bin" / "python"
    if not (VENV / ".edgefleet-ready").exists():
        pytest.fail(f"the PredictionClient virtualenv is missing at {VENV}: run .ci/install")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(python), str(ACCEL_CLIENT)],
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def call(port: int, key: str, path: Path) -> dict[str, Any]:
    return {"call": "score_file", "address": "127.0.0.1", "port": port, "use_ssl": False,
            "key": key, "service": "edgefleet-test", "path": str(path)}  # fmt: skip


def test_package_reports_a_lean_image(packaged: Packaged) -> None:
    result = packaged.result
    assert result["pushed"] and result["digest"].startswith("sha256:")
    assert result["requirements"] == ["numpy>=1.26", "tabulate>=0.9"]
    (note,) = result["notes"]
    assert note.startswith("numpy ") and note.endswith(" is already in the runtime; using it")
    assert result["runtimeImage"].startswith("edgefleet-runtime:user-")
    assert result["sizeBytes"] < 800e6  # no torch, onnx or openvino in the image
    module = result["snippet"]["modules"]["scoring"]
    options = json.loads(module["settings"]["createOptions"])
    assert set(options["HostConfig"]["PortBindings"]) == {"50051/tcp", "5001/tcp"}
    assert module["env"]["EDGEFLEET_FPGA_DEVICE"]["value"].startswith("/run/edgefleet-fpga/")
    (cred,) = result["snippet"]["runtime"]["settings"]["registryCredentials"].values()
    assert cred["address"] == packaged.reg.address and cred["username"] == packaged.reg.user


def test_prediction_client_and_score_from_the_containers(
    deployed: Deployed, photos: dict[str, Path]
) -> None:
    cpu_grpc, cpu_http = deployed.ports["cpu"]
    fpga_grpc, fpga_http = deployed.ports["fpga"]
    chelsea, coffee = photos["chelsea.jpg"], photos["coffee.jpg"]
    answers = prediction_client(
        [call(cpu_grpc, KEYS[0], chelsea), call(cpu_grpc, KEYS[1], coffee),
         call(fpga_grpc, KEYS[0], chelsea), call(fpga_grpc, KEYS[0], coffee)]
    )  # fmt: skip
    assert all(a["ok"] for a in answers), answers
    assert answers[0]["top5"][0] in CATS and answers[1]["top5"][0] == ESPRESSO
    assert answers[2]["top5"][0] in CATS and answers[3]["top5"][0] in {ESPRESSO, 968}
    with deployed.device.client() as dev:  # the emulated card on the host computed those
        assert dev.status()["counters"]["images"] >= 2

    # POST /score: the unmodified score.py under azmlinfsrv, behind our key check
    for port in (cpu_http, fpga_http):
        body = {"image": base64.b64encode(chelsea.read_bytes()).decode()}
        url = f"http://127.0.0.1:{port}/score"
        answer = httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEYS[1]}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["custom"] is True and answer.json()["class_id"] in CATS
        # score.py's own package (tabulate) came from --requirements into the image
        label, class_id = answer.json()["table"].rsplit(maxsplit=1)
        assert (label, int(class_id)) == (answer.json()["label"], answer.json()["class_id"])
        assert httpx.post(url, json=body).status_code == 401
    swagger = httpx.get(
        f"http://127.0.0.1:{cpu_http}/swagger.json", headers={"Authorization": f"Bearer {KEYS[0]}"}
    )
    assert swagger.status_code == 200 and "/score" in swagger.json()["paths"]
    # the built-in featurizer still answers the Open Inference Protocol on the same port
    image = base64.b64encode(coffee.read_bytes()).decode()
    infer = httpx.post(
        f"http://127.0.0.1:{cpu_http}/v2/models/efficientnet-lite0/infer",
        json={"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [image]}]},
        headers={"Authorization": f"Bearer {KEYS[0]}"},
        timeout=30,
    )
    assert infer.status_code == 200, infer.text
    (scores,) = [o for o in infer.json()["outputs"] if o["name"] == "scores"]
    assert max(range(len(scores["data"])), key=scores["data"].__getitem__) == ESPRESSO


def test_killed_scorer_is_restarted_and_answers_again(
    deployed: Deployed, photos: dict[str, Path]
) -> None:
    agent = deployed.agent
    before = agent.module("cpu")["restartCount"]
    client = docker_client()
    try:
        (found,) = client.api.containers(filters={"name": f"{agent.device_id}-cpu"})
        client.api.kill(found["Id"])
    finally:
        client.close()
    agent.wait_for(
        "cpu restarted",
        lambda r: (
            r["modules"]["cpu"]["restartCount"] > before
            and r["modules"]["cpu"]["runtimeStatus"] == "running"
        ),
        timeout=90,
    )
    grpc_port, http_port = deployed.ports["cpu"]
    wait_http(http_port)
    (answer,) = prediction_client([call(grpc_port, KEYS[0], photos["chelsea.jpg"])])
    assert answer["ok"] and answer["top5"][0] in CATS, answer


def augmented_crops(photo: Any, count: int, rng: Any) -> list[Any]:
    """Random square crops (60-90 % of the short side), mirrored half of the time, resized."""
    import cv2

    out = []
    h, w = photo.shape[:2]
    for _ in range(count):
        side = int(min(h, w) * rng.uniform(0.6, 0.9))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = photo[top : top + side, left : left + side]
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        out.append(cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA))
    return out


def test_transfer_learning_head_packaged_and_served(
    deployed: Deployed, packaged: Packaged, model_dir: Path, tmp_path: Path
) -> None:
    """A folder per class -> train-head (held-out accuracy) -> package --head -> deploy ->
    PredictionClient answers with the custom classes."""
    import cv2
    import numpy as np
    from skimage import data

    rng = np.random.default_rng(11)
    store = tmp_path / "models"
    shutil.copytree(model_dir, store)
    photos = {"cat": data.chelsea(), "coffee": data.coffee()}  # labels sorted: cat=0, coffee=1
    for label, photo in photos.items():
        (tmp_path / "train" / label).mkdir(parents=True)
        for i, crop in enumerate(augmented_crops(photo, 10, rng)):
            path = tmp_path / "train" / label / f"{i}.jpg"
            assert cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    trained = edgefleet(
        "models", "train-head", "--featurizer", "efficientnet-lite0", "--images",
        str(tmp_path / "train"), "--name", "pets", "--holdout", "0.3", "--model-dir", str(store),
        "--json",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    summary = json.loads(trained.stdout)
    assert summary["labels"] == ["cat", "coffee"] and summary["heldout_images"] == 6
    assert summary["heldout_accuracy"] >= 0.8  # chance is 0.5

    reg = packaged.reg
    image = f"{reg.address}/ef-pets{RUN}:1"
    done = edgefleet(
        "models", "package", "--model", "efficientnet-lite0", "--head", "pets", "--model-dir",
        str(store), "--image", image, "--push", "--registry-user", reg.user,
        "--registry-password", reg.password, "--cpu-only", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    client = docker_client()
    try:
        client.api.remove_image(image, force=True)  # the agent pulls it; nothing stays behind
    finally:
        client.close()
    grpc_port, http_port = free_port(), free_port()
    pets = scoring_module(json.loads(done.stdout)["snippet"], grpc_port, http_port)
    deployed.agent.deploy(manifest({**deployed.mods, "pets": pets}, reg.credentials()))
    deployed.agent.wait_status("pets", "running", timeout=120)
    wait_http(http_port)
    tests = {}
    for label, photo in photos.items():
        (crop,) = augmented_crops(photo, 1, rng)
        tests[label] = tmp_path / f"test-{label}.jpg"
        assert cv2.imwrite(str(tests[label]), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    cat, coffee = prediction_client([call(grpc_port, KEYS[0], p) for p in tests.values()])
    assert cat["ok"] and cat["shape"] == [2] and cat["top5"][0] == 0, cat
    assert coffee["ok"] and coffee["top5"][0] == 1, coffee


def test_entry_script_whose_init_fails_stops_the_container(
    packaged: Packaged, model_dir: Path, tmp_path: Path
) -> None:
    """azmlinfsrv exits when init() raises: the container exits non-zero (the agent then restarts
    it and reports it) instead of serving 503s on /score."""
    script = tmp_path / "score.py"
    script.write_text("def init():\n    raise RuntimeError('no weights here')\n\n"
                      "def run(raw_data):\n    return {}\n")  # fmt: skip
    image = f"edgefleet-test-broken{RUN}:1"
    done = edgefleet(
        "models", "package", "--model", "efficientnet-lite0", "--model-dir", str(model_dir),
        "--entry-script", str(script), "--image", image, "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    client = docker_client()
    try:
        container = client.containers.run(image, detach=True)
        try:
            status = container.wait(timeout=120)
            logs = container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)
        assert status["StatusCode"] != 0, logs[-2000:]
        assert "no weights here" in logs and "azmlinfsrv exited" in logs
    finally:
        client.api.remove_image(image, force=True)
        client.close()


def test_wrong_registry_credentials_report_a_pull_error(
    deployed: Deployed, packaged: Packaged
) -> None:
    # the same image under a tag that is not on this host: the agent has to pull it
    other = packaged.reg.push(packaged.image, f"ef-other{RUN}", "1")
    agent = deployed.agent
    mods = {**deployed.mods, "locked": {**deployed.mods["cpu"], "settings": {
        "image": other, "createOptions": "{}"}}}  # fmt: skip
    agent.deploy(manifest(mods, packaged.reg.credentials(password="wrong")))
    locked = agent.wait_status("locked", "failed", timeout=90)
    assert "unauthorized" in locked["statusDescription"] or "auth" in locked["statusDescription"]
    assert agent.proc is not None and agent.proc.poll() is None  # nothing crashed
    assert agent.module("fpga")["runtimeStatus"] == "running"


def test_registry_refusing_credentials_fails_before_building(
    packaged: Packaged, model_dir: Path
) -> None:
    reg = packaged.reg
    done = edgefleet(
        "models", "package", "--model", "efficientnet-lite0", "--model-dir", str(model_dir),
        "--image", f"{reg.address}/x{RUN}:1", "--push",
        "--registry-user", reg.user, "--registry-password", "wrong",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert f"{reg.address} refused the push with user 'edge'" in line
