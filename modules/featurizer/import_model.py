"""``edgefleet models import``: a checked ONNX image model becomes a store entry like a built one.

The imported graph is the model's ``fp32`` featurizer (its output is the class scores), and a
one-node head turns those into probabilities (Softmax, or Identity when the graph ends in one),
so every path that opens a built model (cpu, gpu, the serving core, ``models predict``) opens an
imported one unchanged. Nothing is written until every check has passed; blobs are named by
their sha256 and each manifest is replaced by an atomic rename, which is the commit point.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from modules.accelerators.imported import ImportOptions, ImportRejected, Inspection, inspect_model
from modules.accelerators.model_store import (
    DetectorSettings,
    Head,
    ModelManifest,
    ModelStore,
    Preprocessing,
    TensorSpec,
    sha256_file,
    split_ref,
)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
PROBS = "probabilities"


def check_name(name: str, version: str | None, store: ModelStore) -> None:
    """Refuse bad names and a name already taken (a new --version of an import is fine)."""
    from modules.featurizer.build import SPECS

    if not NAME_RE.match(name):
        raise ImportRejected(
            f"--name {name!r}: use lowercase letters, digits, '.', '_' or '-' (max 64)"
        )
    if version is not None and not VERSION_RE.match(version):
        raise ImportRejected(f"--version {version!r}: use letters, digits, '.', '_' or '-'")
    if name in SPECS:
        raise ImportRejected(f"{name!r} is a built-in model name; choose another --name")
    if not store.has(name):
        return
    current = store.get(name)
    if current.origin != "imported":
        raise ImportRejected(f"a model named {name!r} is already in the store")
    if version is None:
        raise ImportRejected(
            f"{name!r} is already imported (versions: {', '.join(store.versions(name))}); "
            "give --version to add one"
        )
    if version in store.versions(name):
        raise ImportRejected(f"{name}:{version} is already imported; choose another --version")


def next_version(store: ModelStore, name: str) -> str:
    return "1" if not store.has(name) else str(len(store.versions(name)) + 1)


def _head(path: Path, classes: int, softmax: bool) -> None:
    import onnx
    from onnx import TensorProto, helper

    node = (
        helper.make_node("Softmax", ["scores"], [PROBS], axis=-1)
        if softmax
        else helper.make_node("Identity", ["scores"], [PROBS])
    )
    graph = helper.make_graph(
        [node],
        "head",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", classes])],
        [helper.make_tensor_value_info(PROBS, TensorProto.FLOAT, ["batch", classes])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def import_model(
    store: ModelStore,
    path: Path,
    name: str,
    options: ImportOptions,
    version: str | None = None,
) -> tuple[ModelManifest, Inspection]:
    """Check ``path``, store it as ``name`` (version ``version`` or the next number)."""
    import onnx

    split_ref(name)
    check_name(name, version, store)
    found = inspect_model(Path(path), options)
    version = version or next_version(store, name)
    classes = found.num_classes or 0
    shape_in: list[int | str] = (
        ["batch", found.channels, found.height, found.width]
        if found.layout == "NCHW"
        else ["batch", found.height, found.width, found.channels]
    )
    pre = Preprocessing(
        resize_short_side=round(found.height / 0.875),
        crop=found.height,
        mean=(found.mean[0], found.mean[1], found.mean[2]),
        std=(found.std[0], found.std[1], found.std[2]),
        layout=found.layout,
        channels=1 if found.channels == 1 else 3,
    )
    with tempfile.TemporaryDirectory(prefix="edgefleet-import-") as tmp:
        work = Path(tmp)
        graph_file = work / "model.onnx"
        onnx.save(found.model, str(graph_file))
        heads: dict[str, Head] = {}
        head_file = work / "head.onnx"
        if found.kind == "classifier":
            _head(head_file, classes, softmax=not found.ends_in_softmax)
        # every check passed: from here on the store is written
        artifact = store.add_artifact(graph_file)
        if found.kind == "classifier":
            heads["default"] = Head(
                artifact=store.add_artifact(head_file),
                input=TensorSpec(name="scores", shape=["batch", classes]),
                output=TensorSpec(name=PROBS, shape=["batch", classes]),
                num_classes=classes,
                labels="inline",
                label_names=found.labels or [str(i) for i in range(classes)],
                description="the imported model's own classes",
            )
    out = found.outputs[0]
    detector = None
    if found.detection_outputs is not None:
        detected = found.detection_outputs
        detector = DetectorSettings(
            architecture="decoded",
            labels=found.labels or [],
            thresholds=(options.score_threshold, 0.0, 0.0),
            boxes_output=detected.boxes,
            scores_output=detected.scores,
            classes_output=detected.classes,
            box_format=options.box_format,
            box_units=options.box_units,
        )
    manifest = ModelManifest(
        name=name,
        version=version,
        architecture=f"imported ONNX (opset {found.opset})",
        description=found.metadata.get("description", "") or found.model.doc_string[:200],
        synthetic_weights=False,
        weights_source=f"imported from {Path(path).name}",
        featurizer={"fp32": artifact},
        featurizer_input=TensorSpec(name=found.input_name, shape=shape_in),
        featurizer_output=TensorSpec(name=out["name"], shape=list(out["shape"])),
        feature_dim=classes,
        heads=heads,
        preprocessing=pre,
        featurizer_macs=found.macs,
        origin="imported",
        kind=found.kind,
        detector=detector,
        source={
            "file": Path(path).name,
            "sha256": sha256_file(Path(path)),
            "producer": f"{found.model.producer_name} {found.model.producer_version}".strip(),
            "labels": "given" if found.labels else "class ids",
            "ops": ",".join(found.stored_ops),
        },
    )
    store.save(manifest)
    return manifest, found
