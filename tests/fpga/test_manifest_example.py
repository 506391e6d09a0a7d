"""The shipped example manifest runs the device as a process module and maps it into a container."""

from __future__ import annotations

from pathlib import Path

from edgefleet.manifest import load_manifest

MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "fpga-featurizer.json"


def test_fpga_manifest_is_valid_and_maps_the_device_like_catapult() -> None:
    variables = {
        "FPGA_MODEL": "efficientnet-lite0",
        "FPGA_PRECISION": "bfp8",
        "EDGEFLEET_MODEL_DIR": "/var/lib/edgefleet/models",
        "SCORER_IMAGE": "localhost:5000/scorer:1",
    }
    deployment = load_manifest(MANIFEST, variables, strict=True)
    modules = deployment.edge_agent.modules
    device = modules["fpga0"]
    argv = device.settings.argv()
    assert argv[:3] == ["edgefleet", "fpga-emulator", "serve"]
    assert argv[argv.index("--load") + 1] == "efficientnet-lite0"
    assert device.startupOrder < modules["scorer"].startupOrder
    options = modules["scorer"].settings.create_options()
    assert options["HostConfig"]["Binds"] == ["/run/edgefleet/fpga0.sock:/dev/catapult0"]
    assert modules["scorer"].env_values()["EDGEFLEET_FPGA_DEVICE"] == "/dev/catapult0"
