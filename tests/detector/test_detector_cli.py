"""The face detector in the CLI: listed as a detector with the accelerators it runs on (the
emulated card among them: tests/detector/test_fpga_detector.py); the bench reports int8 and bfp8
beside fp32."""

from __future__ import annotations

from pathlib import Path

from tests.byom.cli import cli


def test_models_list_shows_the_detector_and_where_it_runs(detector_store: Path) -> None:
    rows = cli("models", "list", "--model-dir", str(detector_store), "--json").json()["models"]
    (row,) = [r for r in rows if r["name"] == "face-detector"]
    assert row["kind"] == "detector" and row["synthetic_weights"] is False
    assert row["precisions"] == ["fp32", "int8"]
    assert row["accelerators"] == ["cpu", "gpu", "fpga-emulator"]
    assert row["rewritten_at_load"] == ["bfp8", "msfp9", "msfp8"]
    assert row["heads"] == []


def test_bench_featurizer_reports_the_detectors_int8_and_bfp8_beside_fp32(
    detector_store: Path,
) -> None:
    report = cli("bench", "featurizer", "--model", "face-detector", "--precision", "int8,bfp8",
                 "--iterations", "2", "--seconds", "5", "--model-dir", str(detector_store),
                 "--json").json()  # fmt: skip
    assert report["kind"] == "detector" and list(report["runs"]) == ["fp32", "int8", "bfp8"]
    assert "bfp8 numerics" in report["runs"]["bfp8"]["engine"]
    for run in report["runs"].values():
        assert run["images"] >= 1 and run["p50_ms"] > 0
        assert 0.2 < run["gmacs_per_image"] < 1.0  # the cascade's work on these photos
        assert 0 < run["fraction_of_peak"] < 1
    assert report["photos"]["astronaut"]["fp32_boxes"] == 1
    assert report["photos"]["astronaut"]["bfp8_boxes"] == 1
    assert report["box_agreement"]["match_rate"] == 1.0  # int8's, the first asked
    for prec in ("int8", "bfp8"):
        assert report["runs"][prec]["box_agreement"]["match_rate"] == 1.0
        assert report["runs"][prec]["box_agreement"]["extra_boxes"] == 0
