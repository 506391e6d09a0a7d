"""``edgefleet models package`` on bad input, and the pure parts (snippet, Dockerfile, the image's
launch arguments, the score.py featurizer settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modules.packaging.context import ImageSpec, render_dockerfile
from modules.packaging.docker_ops import split_reference
from modules.packaging.entrypoint import serve_args
from modules.packaging.snippet import manifest_snippet
from modules.scoring.featurizer_api import config_from_env
from tests.packaging.test_package_e2e import edgefleet


def test_unknown_model_and_missing_script_are_one_line_errors(tmp_path: Path) -> None:
    store = tmp_path / "models"
    done = edgefleet("models", "package", "--model", "nope", "--model-dir", str(store),
                     "--image", "127.0.0.1:1/x:1")  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "'nope' is not in the store" in done.stderr
    done = edgefleet("models", "package", "--model", "nope", "--image", "127.0.0.1:1/x:1",
                     "--entry-script", str(tmp_path / "score.py"))  # fmt: skip
    assert done.returncode == 1 and "score.py does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_snippet_maps_ports_fpga_socket_and_credentials() -> None:
    snippet = manifest_snippet(
        "reg.example:5000/cams/score:3", "reg.example:5000", "ci",
        fpga_socket=Path("/run/edgefleet/fpga0.sock"),
    )  # fmt: skip
    module = snippet["modules"]["scoring"]
    options = json.loads(module["settings"]["createOptions"])
    assert options["HostConfig"]["PortBindings"]["50051/tcp"] == [{"HostPort": "50051"}]
    assert options["HostConfig"]["PortBindings"]["5001/tcp"] == [{"HostPort": "5001"}]
    assert options["HostConfig"]["Binds"] == ["/run/edgefleet:/run/edgefleet-fpga"]
    assert module["env"]["EDGEFLEET_FPGA_DEVICE"] == {"value": "/run/edgefleet-fpga/fpga0.sock"}
    creds = snippet["runtime"]["settings"]["registryCredentials"]
    assert creds == {"reg-example-5000": {"address": "reg.example:5000", "username": "ci",
                                          "password": "${REGISTRY_PASSWORD}"}}  # fmt: skip
    cpu = manifest_snippet("local/score:1", "", None)
    assert "Binds" not in cpu["modules"]["scoring"]["settings"]["createOptions"]
    assert "runtime" not in cpu


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("127.0.0.1:5000/a/b:7", ("127.0.0.1:5000", "127.0.0.1:5000/a/b", "7")),
        ("reg.io/b", ("reg.io", "reg.io/b", "latest")),
        ("team/b:2", ("", "team/b", "2")),
    ],
)
def test_split_reference(image: str, expected: tuple[str, str, str]) -> None:
    assert split_reference(image) == expected


def test_image_launches_serve_on_the_cpu_or_the_mapped_fpga() -> None:
    spec = {"model": "efficientnet-lite0", "head": "default", "precision": "int8"}
    cpu = serve_args(spec, {})
    assert cpu[:5] == ["serve", "--model", "efficientnet-lite0", "--head", "default"]
    assert cpu[cpu.index("--accelerator") + 1] == "cpu" and "--precision" in cpu
    assert cpu[cpu.index("--host") + 1] == "0.0.0.0"
    fpga = serve_args(spec, {"EDGEFLEET_FPGA_DEVICE": "/run/x/fpga0.sock"})
    assert fpga[fpga.index("--accelerator") + 1] == "fpga-emulator"
    assert "--precision" not in fpga and fpga[-2:] == ["--device", "/run/x/fpga0.sock"]
    azml = serve_args(spec, {"AZUREML_ENTRY_SCRIPT": "/var/azureml-app/score.py"})
    assert azml[-2:] == ["--score-upstream", "http://127.0.0.1:5002"]


def test_dockerfile_runs_the_entrypoint_with_the_model_where_azureml_puts_it() -> None:
    text = render_dockerfile("edgefleet-runtime:x", ImageSpec("m1", "default", "fp32", "score.py"))
    assert text.startswith("FROM edgefleet-runtime:x\n")
    assert "ENV AZUREML_MODEL_DIR=/var/azureml-app/azureml-models/m1/1" in text
    assert "ENV AZUREML_ENTRY_SCRIPT=/var/azureml-app/score.py" in text
    assert text.rstrip().endswith('CMD ["python3", "-m", "modules.packaging.entrypoint"]')


def test_score_py_featurizer_settings() -> None:
    image = {"model": "m1", "head": "pets", "precision": "int8"}
    cfg = config_from_env({"AZUREML_MODEL_DIR": "/models"}, image)
    assert (cfg.model, cfg.head, cfg.precision, cfg.accelerator) == ("m1", "pets", "int8", "cpu")
    assert cfg.model_dir == "/models"
    fpga = config_from_env({"EDGEFLEET_FPGA_DEVICE": "/run/f.sock"}, image)
    assert (fpga.accelerator, fpga.precision, fpga.device) == (
        "fpga-emulator",
        "bfp8",
        "/run/f.sock",
    )
