"""The models/bench CLI as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from skimage import data

from .helpers import run_cli, write_image


def test_predict_prints_top5_json_per_image(model_dir: Path, tmp_path: Path) -> None:
    cat = write_image(tmp_path / "cat.jpg", data.chelsea())
    coffee = write_image(tmp_path / "coffee.png", data.coffee())
    result = run_cli(
        "models",
        "predict",
        str(cat),
        str(coffee),
        "--model",
        "efficientnet-lite0",
        "--accelerator",
        "cpu",
        "--precision",
        "int8",
        "--model-dir",
        str(model_dir),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert [entry["image"] for entry in out] == [str(cat), str(coffee)]
    for entry in out:
        top = entry["top"]
        assert len(top) == 5
        assert set(top[0]) == {"class_id", "label", "score"}
        scores = [t["score"] for t in top]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    assert out[0]["top"][0]["class_id"] in {281, 282, 285}
    assert out[1]["top"][0]["label"] in {"espresso", "cup"}


def test_gpu_request_without_gpu_says_so_and_runs_on_cpu(model_dir: Path, tmp_path: Path) -> None:
    cat = write_image(tmp_path / "cat.jpg", data.chelsea())
    result = run_cli(
        "models",
        "predict",
        str(cat),
        "--accelerator",
        "gpu",
        "--precision",
        "fp16",
        "--model-dir",
        str(model_dir),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert "GPU path unavailable" in result.stderr and "running on the CPU" in result.stderr
    assert json.loads(result.stdout)[0]["top"][0]["class_id"] in {281, 282, 285}
    # the default accelerator, auto, picks the GPU only when there is one: here the CPU, quietly
    auto = run_cli("models", "predict", str(cat), "--model-dir", str(model_dir), "--json")
    assert auto.returncode == 0 and "warning" not in auto.stderr
    assert json.loads(auto.stdout) == json.loads(result.stdout)


def test_bad_inputs_fail_with_one_clear_line(model_dir: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    for args in (
        [str(junk)],
        [str(junk), "--accelerator", "tpu"],
        [str(junk), "--accelerator", "cpu", "--precision", "fp16"],  # fp16 is a GPU precision
    ):
        result = run_cli("models", "predict", *args, "--model-dir", str(model_dir))
        assert result.returncode == 1
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_list_json_shows_built_and_buildable_models(model_dir: Path) -> None:
    result = run_cli("models", "list", "--model-dir", str(model_dir), "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    (lite,) = out["models"]
    assert lite["name"] == "efficientnet-lite0" and lite["synthetic_weights"] is False
    assert {"resnet50", "resnet152", "vgg16", "densenet121"} <= set(out["buildable"])


def test_bench_reports_latency_baseline_peak_and_agreement(model_dir: Path) -> None:
    result = run_cli(
        "bench",
        "featurizer",
        "--model",
        "efficientnet-lite0",
        "--accelerator",
        "cpu",
        "--precision",
        "int8",
        "--iterations",
        "20",
        "--seconds",
        "1",
        "--eval-per-photo",
        "6",
        "--model-dir",
        str(model_dir),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("p50_ms", "p90_ms", "p99_ms"):
        assert report["batch1"][key] > 0
    assert report["batch1"]["p50_ms"] <= report["batch1"]["p99_ms"]
    assert report["throughput_ips_batch8"] > 0
    assert report["baseline_cpu_fp32"]["p50_ms"] > 0 and report["speedup_p50"] > 0
    assert 0 < report["fraction_of_peak"] < 1
    assert report["eval_inputs"] == 6 * 6  # six photos, six views of each
    assert 0.5 <= report["top1_agreement_with_fp32"] <= 1.0
    assert report["eval_set"] == "objects" and list(report["accuracy"]) == ["objects", "hard"]
    assert report["accuracy"]["hard"]["inputs"] == 13 * 6


def test_openvino_engine_runs_the_same_artifacts(model_dir: Path, tmp_path: Path) -> None:
    cat = write_image(tmp_path / "cat.jpg", data.chelsea())
    result = run_cli(
        "models",
        "predict",
        str(cat),
        "--precision",
        "int8",
        "--engine",
        "openvino",
        "--model-dir",
        str(model_dir),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["top"][0]["class_id"] in {281, 282, 285}
    bad = run_cli("models", "predict", str(cat), "--engine", "tvm", "--model-dir", str(model_dir))
    assert bad.returncode == 1 and "unknown CPU engine" in bad.stderr
