"""Small image models the tests make themselves: a PyTorch CNN (NCHW, exported with
torch.onnx.export) and a Keras/TF-style NHWC graph written with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 32
CLASSES = 4


def torch_cnns(static: Path, dynamic: Path, size: int = SIZE) -> tuple[Path, Path]:
    """Conv-BN-ReLU, Conv-ReLU, global pooling, Linear: a 4-class classifier trained for a few
    steps, exported twice: with a fixed input and with symbolic batch/height/width."""
    import torch
    from torch import nn

    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, CLASSES),
    )
    _train(net, size)
    net.eval()
    dummy = torch.randn(1, 3, size, size)
    for path, axes in (
        (static, None),
        (dynamic, {"input": {0: "batch", 2: "height", 3: "width"}}),
    ):
        torch.onnx.export(
            net, (dummy,), str(path), input_names=["input"], output_names=["logits"],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip
    return static, dynamic


def _train(net: object, size: int, steps: int = 50) -> None:
    """A few steps on random coloured squares, class = the dominant colour (red, green, blue)
    or dark: a decisive classifier, as a real model is, within a second or two."""
    import torch

    assert isinstance(net, torch.nn.Module)
    gen = torch.Generator().manual_seed(4)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(steps):
        colour = torch.rand(16, 3, 1, 1, generator=gen)
        x = colour + 0.1 * torch.randn(16, 3, size, size, generator=gen)
        rgb = colour.flatten(1)
        target = torch.where(rgb.max(1).values < 0.3, 3, rgb.argmax(1))
        x = (x - 0.45) / 0.225
        loss = torch.nn.functional.cross_entropy(net(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()


def nhwc_graph(path: Path, size: int = SIZE, labels: list[str] | None = None) -> Path:
    """NHWC input -> Transpose -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm ->
    Softmax, as TF/Keras converters emit; labels, mean and std in metadata_props."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, 6).astype(np.float32)
    fc = rng.normal(0, 0.5, (6, 3)).astype(np.float32)
    fcb = np.zeros(3, np.float32)
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "keras_style",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fc, "fc"), (fcb, "fcb"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    meta = {"mean": "0.5,0.5,0.5", "std": "0.5,0.5,0.5"}
    if labels:
        meta["labels"] = "\n".join(labels)
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def decoded_detector_graph(path: Path, size: int = 32) -> Path:
    """A detector in TensorFlow's export style (NMS done in the graph): one fixed box
    (normalized ``ymin, xmin, ymax, xmax``) of class 1, scored by how bright the image is
    (sigmoid of the mean of the normalized pixels), so a white image has it and a black one
    does not."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    box = numpy_helper.from_array(np.array([[[0.25, 0.125, 0.75, 0.625]]], np.float32), "box")
    cls = numpy_helper.from_array(np.array([[1.0]], np.float32), "cls")
    shape = numpy_helper.from_array(np.array([1, 1], np.int64), "shape")
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Sigmoid", ["mean"], ["score"]),
        helper.make_node("Reshape", ["score", "shape"], ["detection_scores"]),
        helper.make_node("Identity", ["box"], ["detection_boxes"]),
        helper.make_node("Identity", ["cls"], ["detection_classes"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, [1, 1, 4]),
            helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, [1, 1]),
            helper.make_tensor_value_info("detection_classes", TensorProto.FLOAT, [1, 1]),
        ],
        initializer=[box, cls, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def conv_detector_graph(path: Path, size: int = 64, classes: int = 2) -> Path:
    """A small single-shot detector that ends in NMS, as detection exports do: three strided
    Conv-ReLU layers to an 8x8 grid, a 1x1 Conv head with per-class scores (Sigmoid) and box
    offsets (Tanh, up to 4 pixels) around a 16-pixel anchor per cell, then ONNX
    NonMaxSuppression and the gathers that give ``detection_boxes`` (xyxy pixels),
    ``detection_scores`` and ``detection_classes``. Seeded random weights: it "detects" image
    patterns, which is all quantization needs to change."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    grid, stride = size // 8, 8
    inits = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    nodes = []
    x = "images"
    for i, (cin, cout) in enumerate(((3, 8), (8, 16), (16, 16))):
        w = rng.normal(0, np.sqrt(2 / (cin * 9)), (cout, cin, 3, 3)).astype(np.float32)
        b = rng.normal(0, 0.05, cout).astype(np.float32)
        nodes.append(
            helper.make_node(
                "Conv",
                [x, const(f"w{i}", w), const(f"b{i}", b)],
                [f"c{i}"],
                pads=[1, 1, 1, 1],
                strides=[2, 2],
            )  # fmt: skip
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x = f"r{i}"
    head_w = rng.normal(0, 0.15, (classes + 4, 16, 1, 1)).astype(np.float32)
    head_b = np.concatenate([np.linspace(-1.5, -0.3, classes), np.zeros(4)]).astype(np.float32)
    centres = (np.arange(grid, dtype=np.float32) + 0.5) * stride
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    half = stride
    anchors = np.stack([cx - half, cy - half, cx + half, cy + half], -1).reshape(1, -1, 4)
    cells = grid * grid
    nodes += [
        helper.make_node("Conv", [x, const("wh", head_w), const("bh", head_b)], ["head"]),
        helper.make_node(
            "Reshape", ["head", const("flat", np.array([1, classes + 4, cells]))], ["head_flat"]
        ),  # fmt: skip
        helper.make_node(
            "Split",
            ["head_flat", const("parts", np.array([classes, 4]))],
            ["logits", "offsets"],
            axis=1,
        ),  # fmt: skip
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
        helper.make_node("Tanh", ["offsets"], ["shift"]),
        helper.make_node("Transpose", ["shift"], ["shift_t"], perm=[0, 2, 1]),
        helper.make_node(
            "Mul", ["shift_t", const("reach", np.array(4.0, np.float32))], ["moved"]
        ),  # fmt: skip
        helper.make_node(
            "Add", ["moved", const("anchors", anchors.astype(np.float32))], ["boxes"]
        ),  # fmt: skip
        helper.make_node(
            "NonMaxSuppression",
            [
                "boxes",
                "scores",
                const("max_out", np.array([20])),
                const("iou", np.array([0.3], np.float32)),
                const("min_score", np.array([0.5], np.float32)),
            ],
            ["picked"],
        ),  # fmt: skip
        helper.make_node("Gather", ["picked", const("col1", np.array(1))], ["class_ids"], axis=1),
        helper.make_node("Gather", ["picked", const("col2", np.array(2))], ["box_ids"], axis=1),
        helper.make_node("Squeeze", ["boxes", const("axis0", np.array([0]))], ["boxes0"]),
        helper.make_node("Gather", ["boxes0", "box_ids"], ["detection_boxes"], axis=0),
        helper.make_node("GatherND", ["scores", "picked"], ["detection_scores"]),
        helper.make_node("Cast", ["class_ids"], ["detection_classes"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "conv-nms-detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("detection_classes", TensorProto.FLOAT, ["n"]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path
