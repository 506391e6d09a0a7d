"""`edgefleet models quantize` on an imported model, serve's warning for a flagged precision,
and the FPGA emulator loading imported models (or refusing them by operator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from tests.byom.cli import cli
from tests.support.hub import stop_process
from tests.support.scoring import start_serve


@pytest.fixture()
def store(files: dict[str, Path], tmp_path: Path) -> Path:
    root = tmp_path / "store"
    run = cli("models", "import", str(files["cnn"]), "--name", "shapes", "--model-dir", str(root))
    assert run.code == 0, run.err
    return root


def test_int8_reports_agreement_and_latency_and_is_stored(
    files: dict[str, Path], store: Path
) -> None:
    report = cli(
        "models", "quantize", "shapes", "--calibration", str(files["images"]),
        "--precision", "int8", "--holdout", "0.3", "--model-dir", str(store), "--json",
    ).json()  # fmt: skip
    assert report["calibration_images"] == 21 and report["holdout_images"] == 9
    assert report["inputs"] == 9 and report["top1_agreement_with_fp32"] >= 0.88
    assert report["fp32_ms"] > 0 and report["quantized_ms"] > 0
    (row,) = cli("models", "list", "--model-dir", str(store), "--json").json()["models"]
    assert row["precisions"] == ["fp32", "int8"]
    assert row["agreement"] == {"int8": report["top1_agreement_with_fp32"]}
    assert row["flagged"] == ([] if report["top1_agreement_with_fp32"] >= 0.98 else ["int8"])
    predicted = cli(
        "models", "predict", str(files["images"] / "00.png"), "--model", "shapes",
        "--accelerator", "cpu", "--precision", "int8", "--model-dir", str(store), "--json",
    ).json()  # fmt: skip
    assert len(predicted[0]["top"]) == 4


def test_bfp_agreement_is_recorded(files: dict[str, Path], store: Path) -> None:
    report = cli(
        "models", "quantize", "shapes", "--calibration", str(files["images"]),
        "--precision", "bfp8", "--model-dir", str(store), "--json",
    ).json()  # fmt: skip
    assert report["holdout_images"] == 6 and report["calibration_images"] == 24
    assert report["top1_agreement_with_fp32"] == 1.0 and not report["flagged"]
    (row,) = cli("models", "list", "--model-dir", str(store), "--json").json()["models"]
    assert row["agreement"] == {"bfp8": 1.0} and row["precisions"] == ["fp32"]


def test_low_agreement_is_stored_flagged_and_serve_warns(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """Classes whose weights differ by less than an int8 step tie after quantization; fp32
    still tells them apart, so agreement falls below the 0.98 default."""
    store = tmp_path / "store"
    tied = _near_tie(files["cnn"], tmp_path / "tied.onnx")
    run = cli("models", "import", str(tied), "--name", "raw",
              "--model-dir", str(store))  # fmt: skip
    assert run.code == 0, run.err
    quantized = cli("models", "quantize", "raw", "--calibration", str(files["images"]),
                    "--precision", "int8", "--model-dir", str(store))  # fmt: skip
    assert quantized.code == 0 and "stored but flagged" in quantized.err
    (row,) = cli("models", "list", "--model-dir", str(store), "--json").json()["models"]
    assert row["flagged"] == ["int8"] and row["agreement"]["int8"] < 0.98
    assert "int8" in row["precisions"]
    server = start_serve(store, tmp_path, "--model", "raw", "--precision", "int8")
    try:
        assert "warning: raw int8 agreed with fp32 on fewer held-out images" in server.output()
    finally:
        assert stop_process(server.process) == 0  # type: ignore[arg-type]


def _near_tie(src: Path, dst: Path) -> Path:
    """Every class's Linear weights = class 0's plus a perturbation far below the int8 step."""
    from onnx import numpy_helper

    model = onnx.load(str(src))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    for init in model.graph.initializer:
        if init.name in gemm.input[1:]:
            w = numpy_helper.to_array(init).copy()
            rng = np.random.default_rng(1)
            w[1:] = w[:1] + rng.normal(0, 1e-5, w[1:].shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, str(dst))
    return dst


def _with_erf(src: Path, dst: Path) -> Path:
    """The CNN with an Erf (GELU-style) after its first ReLU: an op the card does not run."""
    model = onnx.load(str(src))
    nodes = list(model.graph.node)
    relu = next(n for n in nodes if n.op_type == "Relu")
    erf = helper.make_node("Erf", [relu.output[0]], ["erf_out"])
    for node in nodes:
        for i, name in enumerate(node.input):
            if name == relu.output[0]:
                node.input[i] = "erf_out"
    model.graph.node.insert(nodes.index(relu) + 1, erf)
    onnx.save(model, str(dst))
    return dst


def test_fpga_emulator_loads_supported_imports_and_refuses_others(
    files: dict[str, Path], store: Path, tmp_path: Path
) -> None:
    from modules.accelerators.fpga.cycle_model import CardConfig
    from modules.accelerators.fpga.server import DeviceError, EmulatedCard
    from modules.accelerators.model_store import ModelStore

    erf = _with_erf(files["cnn"], tmp_path / "erf.onnx")
    run = cli("models", "import", str(erf), "--name", "gelu", "--model-dir", str(store))
    assert run.code == 0, run.err
    rows = cli("models", "list", "--model-dir", str(store), "--json").json()["models"]
    runs_on = {r["name"]: r["accelerators"] for r in rows}
    assert runs_on == {"gelu": ["cpu", "gpu"], "shapes": ["cpu", "gpu", "fpga-emulator"]}

    card = EmulatedCard("fpga9", ModelStore(store), CardConfig(flash_ms=0, flash_ms_per_mbyte=0))
    loaded = card.load("shapes", "bfp8")
    assert loaded["quantized_layers"] == 3 and loaded["gmacs"] > 0
    with pytest.raises(DeviceError) as err:
        card.load("gelu", "bfp8")
    assert err.value.code == "unsupported_ops" and "Erf" in str(err.value)
    assert card.status()["model"] == "shapes"
    batch = np.zeros((1, 3, 32, 32), np.float32)
    header, payload = card.infer({"shape": [1, 3, 32, 32]}, bytearray(batch.tobytes()))
    assert np.frombuffer(payload, "<f4").size == 4


def test_bench_featurizer_takes_an_imported_model(files: dict[str, Path], store: Path) -> None:
    report = cli(
        "bench", "featurizer", "--model", "shapes:1", "--precision", "fp32", "--iterations", "5",
        "--seconds", "1", "--model-dir", str(store), "--json",
    ).json()  # fmt: skip
    assert report["batch1"]["p50_ms"] > 0 and report["throughput_ips_batch8"] > 0
    assert report["accuracy"]["objects"]["inputs"] == 210
