"""Helpers for FPGA emulator tests: a model store holding tiny stand-in featurizers.

The stand-ins are small conv nets (a few KB) registered under the names the device accepts; their
manifests say they are test stand-ins. The device only cares that a name is supported and that the
store holds an fp32 ONNX featurizer for it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from modules.accelerators.model_store import ModelManifest, ModelStore, TensorSpec

TINY_INPUT = (3, 16, 16)


def tiny_featurizer(seed: int, feature_dim: int = 24, opset: int = 17) -> onnx.ModelProto:
    """conv3x3(3->40, stride 2) -> relu -> depthwise 3x3 -> conv1x1(40->dim) -> global avg pool."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((40, 3, 3, 3)).astype(np.float32) * 0.5
    b1 = rng.standard_normal(40).astype(np.float32) * 0.1
    wd = rng.standard_normal((40, 1, 3, 3)).astype(np.float32) * 0.5
    w2 = rng.standard_normal((feature_dim, 40, 1, 1)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd"], ["c2"], pads=[1, 1, 1, 1], group=40),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w2"], ["c3"]),
        helper.make_node("GlobalAveragePool", ["c3"], ["p"]),
        helper.make_node("Flatten", ["p"], ["features"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", *TINY_INPUT])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", feature_dim])],
        initializer=[
            numpy_helper.from_array(v, k)
            for k, v in {"w1": w1, "b1": b1, "wd": wd, "w2": w2}.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def add_tiny_model(store: ModelStore, name: str, seed: int = 0, feature_dim: int = 24) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "featurizer.onnx"
        onnx.save(tiny_featurizer(seed, feature_dim), str(path))
        artifact = store.add_artifact(path)
    store.save(
        ModelManifest(
            name=name,
            version="test",
            architecture="tiny-test-convnet",
            description=f"test stand-in registered as {name} (not the real network)",
            synthetic_weights=True,
            weights_source="tests/support/fpga.py random weights",
            featurizer={"fp32": artifact},
            featurizer_input=TensorSpec(name="images", shape=["batch", *TINY_INPUT]),
            featurizer_output=TensorSpec(name="features", shape=["batch", feature_dim]),
            feature_dim=feature_dim,
        )
    )


def tiny_store(root: Path) -> ModelStore:
    """A store with stand-ins for efficientnet-lite0 and resnet50, plus an unsupported model."""
    store = ModelStore(root)
    add_tiny_model(store, "efficientnet-lite0", seed=1, feature_dim=24)
    add_tiny_model(store, "resnet50", seed=2, feature_dim=32)
    add_tiny_model(store, "mobilenet-v2", seed=3, feature_dim=16)
    return store


def reference_features(
    store: ModelStore, name: str, precision: str, batch: np.ndarray
) -> np.ndarray:
    """What the device must compute: the BFP rewrite of the stored fp32 featurizer (onnxruntime)."""
    import onnxruntime as ort

    from modules.accelerators.fpga.rewrite import rewrite

    model, _ = rewrite(onnx.load(str(store.featurizer_path(name))), precision)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"images": batch})[0])
