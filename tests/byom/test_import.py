"""`edgefleet models import | list | remove` with models the tests make themselves."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tests.byom.cli import cli
from tests.byom.conftest import COLORS, LABELS


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_import_reports_what_it_found_and_keeps_versions(
    files: dict[str, Path], tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    found = cli(
        "models", "import", str(files["cnn"]), "--name", "shapes", "--labels",
        str(files["labels"]), "--model-dir", store, "--json",
    ).json()  # fmt: skip
    assert found["version"] == "1"
    assert found["input"] == {"name": "input", "layout": "NCHW", "channels": 3, "size": [32, 32]}
    # torch fixed the batch at 1; the graph runs batches, so the store keeps it free
    assert found["outputs"] == [{"name": "logits", "shape": ["batch", 4]}]
    assert found["op_counts"]["Conv"] == 2 and found["op_counts"]["Gemm"] == 1
    # conv1 3->8 3x3 (+8 BN folded into it), conv2 8->16 3x3, linear 16->4
    assert found["parameters"] == (8 * 27 + 8) + (16 * 72 + 16) + (4 * 16 + 4)
    # conv1 8x16x16 outputs x 27, conv2 16x8x8 x 72, linear 4 x 16
    assert found["gmacs"] == round((8 * 256 * 27 + 16 * 64 * 72 + 4 * 16) / 1e9, 4)
    assert found["classes"] == 4 and found["labels"] == "given"

    second = cli(
        "models", "import", str(files["cnn"]), "--name", "shapes", "--version", "2",
        "--model-dir", store, "--json",
    ).json()  # fmt: skip
    assert second["version"] == "2"
    listed = cli("models", "list", "--model-dir", store, "--json").json()["models"]
    rows = {(r["name"], r["version"]): r for r in listed}
    assert set(rows) == {("shapes", "1"), ("shapes", "2")}
    assert rows["shapes", "2"]["current"] and not rows["shapes", "1"]["current"]
    assert rows["shapes", "1"]["precisions"] == ["fp32"] and rows["shapes", "1"]["sizes"]["fp32"]
    assert rows["shapes", "1"]["accelerators"] == ["cpu", "gpu", "fpga-emulator"]
    photos = [str(files["images"] / f"{i:02d}.png") for i in range(3)]
    predicted = cli("models", "predict", *photos, "--model", "shapes:1", "--accelerator", "cpu",
                    "--model-dir", store, "--json").json()  # fmt: skip
    assert [len(p["top"]) for p in predicted] == [4, 4, 4]
    assert {t["label"] for t in predicted[0]["top"]} == set(LABELS)

    removed = cli("models", "remove", "shapes:2", "--model-dir", store, "--json").json()
    assert removed["versions"] == ["2"]
    listed = cli("models", "list", "--model-dir", store, "--json").json()["models"]
    assert [(r["name"], r["version"], r["current"]) for r in listed] == [("shapes", "1", True)]
    assert cli("models", "remove", "shapes", "--model-dir", store).code == 0
    assert cli("models", "list", "--model-dir", store, "--json").json()["models"] == []
    assert not list((tmp_path / "store" / "blobs").iterdir())  # nothing left behind


def test_nhwc_graph_with_metadata_and_a_dynamic_graph_with_a_declared_size(
    files: dict[str, Path], tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    nhwc = cli("models", "import", str(files["nhwc"]), "--name", "colors", "--model-dir", store,
               "--json").json()  # fmt: skip
    assert nhwc["input"]["layout"] == "NHWC" and nhwc["input"]["size"] == [32, 32]
    assert nhwc["mean"] == [0.5, 0.5, 0.5] and nhwc["std"] == [0.5, 0.5, 0.5]  # metadata_props
    assert nhwc["classes"] == len(COLORS) and nhwc["labels"] == "given"
    dynamic = cli("models", "import", str(files["dynamic"]), "--name", "dyn", "--input-size",
                  "40x40", "--model-dir", store, "--json").json()  # fmt: skip
    assert dynamic["input"]["size"] == [40, 40]
    assert dynamic["gmacs"] > 0


def _two_inputs(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3, 8, 8]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3, 8, 8]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _with_opset(src: Path, dst: Path, opset: int) -> Path:
    model = onnx.load(str(src))
    model.opset_import[0].version = opset
    onnx.save(model, str(dst))
    return dst


BAD = {
    "truncated": ("not a valid ONNX model", lambda f, t: _truncated(f["cnn"], t), []),
    "opset": ("opset 99 is not supported",
              lambda f, t: _with_opset(f["cnn"], t / "o.onnx", 99), []),
    "no image input": ("exactly one image input", lambda f, t: _two_inputs(t / "two.onnx"), []),
    "dynamic size": ("give --input-size", lambda f, t: f["dynamic"], []),
    "labels": ("4 labels do not match the output width of 3", lambda f, t: f["nhwc"],
               ["--labels", "LABELS"]),
    "size cap": ("the import limit is", lambda f, t: f["cnn"], ["MAXBYTES"]),
    "name exists": ("already imported", lambda f, t: f["cnn"], []),
    "builtin name": ("built-in model name", lambda f, t: f["cnn"], ["--name", "resnet50"]),
}  # fmt: skip


def _truncated(src: Path, tmp: Path) -> Path:
    out = tmp / "truncated.onnx"
    out.write_bytes(src.read_bytes()[:3000])
    return out


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_nonzero_and_leaves_the_store_unchanged(
    case: str, files: dict[str, Path], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    assert cli("models", "import", str(files["cnn"]), "--name", "taken",
               "--model-dir", str(store)).code == 0  # fmt: skip
    before = _tree(store)
    expected, make, extra = BAD[case]
    extra = ["--max-bytes", "1000"] if "MAXBYTES" in extra else extra
    extra = [str(files["labels"]) if a == "LABELS" else a for a in extra]
    name = [] if "--name" in extra else ["--name", "taken" if case == "name exists" else "new"]
    run = cli("models", "import", str(make(files, tmp_path)), *name, *extra,
              "--model-dir", str(store))  # fmt: skip
    assert run.code != 0
    assert expected in run.err and run.err.startswith("error: ")
    assert len(run.err.strip().splitlines()) == 1, run.err
    assert "Traceback" not in run.err + run.out
    assert _tree(store) == before


def test_labels_from_metadata_are_checked_too(files: dict[str, Path], tmp_path: Path) -> None:
    model = onnx.load(str(files["nhwc"]))
    for prop in model.metadata_props:
        if prop.key == "labels":
            prop.value = "\n".join(LABELS)
    onnx.save(model, str(tmp_path / "m.onnx"))
    run = cli("models", "import", str(tmp_path / "m.onnx"), "--name", "x",
              "--model-dir", str(tmp_path / "store"))  # fmt: skip
    assert run.code == 1 and "do not match the output width" in run.err


def test_a_graph_without_detection_outputs_is_no_detector(
    files: dict[str, Path], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    run = cli("models", "import", str(files["nhwc"]), "--name", "boxes", "--kind", "detector",
              "--model-dir", str(store))  # fmt: skip
    assert run.code == 1 and "a detector needs one boxes output" in run.err
    assert "this model has" in run.err  # and what it has instead
    assert not (store / "manifests").exists() or not list((store / "manifests").iterdir())
