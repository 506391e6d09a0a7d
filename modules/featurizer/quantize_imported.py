"""``edgefleet models quantize``: int8 or BFP variants of an imported model, with the numerics of
the built-in models, calibrated on one split of the user's images and judged on the other.

int8: the Conv weights are rounded onto the per-channel int8 grid by GPTQ and the Conv biases
absorb the mean output shift of that rounding (``bias_correction``; both measured on the
calibration split), then onnxruntime's static QDQ
quantizer (MinMax, uint8 activations, per-channel int8 weights) calibrates on the same split.
bfp8 / other BFP formats: the FPGA emulator derives them from fp32 at load time
(``fpga.rewrite``), so the fp32 artifact gains the calibration means in its metadata (its
outputs do not change) and the agreement of the rewritten graph is measured and recorded.
Either way the held-out split never touches calibration. A detector takes the same numerics and
is judged by its boxes instead of top-1 (``quantize_detector``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.accelerators.model_store import ModelManifest, ModelStore, StoreError, split_ref

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import onnx

Progress = Callable[[str, int, int | None], None]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MIN_IMAGES = 4
SPLIT_SEED = 0
TIMING_RUNS = 20


class QuantizeError(StoreError):
    pass


def split_images(files: list[Path], holdout: float) -> tuple[list[Path], list[Path]]:
    """A seeded shuffle of the sorted files: (calibration, held-out), both non-empty."""
    import numpy as np

    if len(files) < MIN_IMAGES:
        raise QuantizeError(f"need at least {MIN_IMAGES} images, found {len(files)}")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(files))
    shuffled = [sorted(files)[i] for i in order]
    held = min(len(files) - 2, max(1, round(len(files) * holdout)))
    return shuffled[held:], shuffled[:held]


def image_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise QuantizeError(f"--calibration {directory}: not a directory")
    return sorted(
        p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


@dataclass(frozen=True)
class Split:
    directory: Path
    calibration: list[Path]
    held_out: list[Path]

    def described(self) -> str:
        total = len(self.calibration) + len(self.held_out)
        return (
            f"{len(self.calibration)} of {total} images in {self.directory.name} "
            f"(held out: {len(self.held_out)}, seed {SPLIT_SEED})"
        )


def keep_networks(
    store: ModelStore,
    manifest: ModelManifest,
    fp32: onnx.ModelProto,
    int8_file: Path | None,
    precision: str,
    split: Split,
    work: Path,
) -> None:
    """Store fp32 with its calibration means, and the int8 network when there is one."""
    import onnx

    with_means = work / "fp32-means.onnx"
    onnx.save(fp32, str(with_means))
    manifest.featurizer["fp32"] = store.add_artifact(with_means)
    if int8_file is not None:
        manifest.featurizer["int8"] = store.add_artifact(int8_file)
        manifest.calibration["int8"] = (
            f"static QDQ, MinMax, per-channel int8 weights, uint8 activations, conv weights "
            f"rounded by GPTQ, conv biases corrected for the int8 weight rounding; "
            f"{split.described()}"
        )
    else:
        manifest.calibration[precision] = (
            "derived from fp32 at load by the FPGA emulator; conv input means from "
            f"{split.described()}"
        )


def record(
    store: ModelStore,
    ref: str,
    manifest: ModelManifest,
    precision: str,
    score: float,
    threshold: float,
) -> bool:
    """Save ``score`` as the precision's agreement, flagged when below ``threshold``."""
    manifest.agreement[precision] = float(score)
    flagged = score < threshold
    manifest.flagged = sorted(
        (set(manifest.flagged) - {precision}) | ({precision} if flagged else set())
    )
    name, _version = split_ref(ref)
    store.save(manifest, current=store.get(name).version == manifest.version)
    return flagged


def _arrays(
    files: list[Path], manifest: ModelManifest, step: str, progress: Progress
) -> npt.NDArray[np.float32]:
    import numpy as np

    from modules.accelerators.preprocess import preprocess

    out = []
    for i, path in enumerate(files):
        out.append(preprocess(path, manifest.preprocessing))
        progress(step, i + 1, len(files))
    return np.concatenate(out).astype(np.float32)


class _Reader:
    """onnxruntime CalibrationDataReader: one image per batch (batch sizes may be fixed at 1)."""

    def __init__(self, name: str, data: npt.NDArray[np.float32]) -> None:
        self._items = [{name: data[i : i + 1]} for i in range(len(data))]

    def get_next(self) -> dict[str, Any] | None:
        return self._items.pop(0) if self._items else None

    def rewind(self) -> None:  # pragma: no cover - the MinMax calibrator reads once
        pass


def _session(model: bytes | Path, int8: bool = False) -> Any:
    """A CPU session with the options the serving path uses (exact int8 kernels where the
    saturating ones would lose precision), so agreement and latency are what serve gives."""
    import onnxruntime as ort

    from modules.accelerators.cpu import cpu_flags, int8_saturates, session_options

    data = str(model) if isinstance(model, Path) else model
    opts = session_options(exact_int8=int8 and int8_saturates(cpu_flags()))
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _outputs(sess: Any, data: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    import numpy as np

    name = sess.get_inputs()[0].name
    rows = [sess.run(None, {name: data[i : i + 1]})[0] for i in range(len(data))]
    return np.concatenate(rows).astype(np.float32)


def median_ms(call: Callable[[], object]) -> float:
    """Median wall time of ``call`` after one warm-up call."""
    import statistics

    call()
    times = []
    for _ in range(TIMING_RUNS):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _latency_ms(sess: Any, sample: npt.NDArray[np.float32]) -> float:
    """Median wall time of one single-image run."""
    name = sess.get_inputs()[0].name
    return median_ms(lambda: sess.run(None, {name: sample}))


def with_means(
    fp32: onnx.ModelProto, input_name: str, calib: npt.NDArray[np.float32]
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    from modules.accelerators.bias_correction import conv_input_means, embed_means

    batches = ({input_name: calib[i : i + 1]} for i in range(len(calib)))
    means = conv_input_means(fp32, batches)
    embed_means(fp32, means)
    return fp32, dict(means)


WEIGHTED_OPS = ("Conv", "MatMul", "Gemm")


def float_tail(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes after the last weighted layers (``WEIGHTED_OPS``): nothing that feeds
    one of those layers. In a detector that is its decoding (score activations, box arithmetic,
    NMS, gathers), which int8 keeps in float as a classifier's softmax head is kept."""
    producer = {out: node for node in model.graph.node for out in node.output}
    feeding: set[int] = set()
    todo = [n for n in model.graph.node if n.op_type in WEIGHTED_OPS]
    while todo:
        node = todo.pop()
        if id(node) in feeding:
            continue
        feeding.add(id(node))
        todo.extend(producer[name] for name in node.input if name in producer)
    return [n.name for n in model.graph.node if id(n) not in feeding]


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (the quantizer excludes nodes by name)."""
    taken = {n.name for n in model.graph.node}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def int8_network(
    fp32: onnx.ModelProto,
    means: dict[str, Any],
    calib: npt.NDArray[np.float32],
    work: Path,
    keep_tail_float: bool = False,
) -> Path:
    """The GPTQ-rounded, bias-corrected static QDQ int8 network, saved under ``work``;
    ``keep_tail_float``: the nodes of ``float_tail`` are not quantized."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from modules.accelerators.bias_correction import correct_conv_biases
    from modules.featurizer.build import GPTQ_IMAGES, _quiet
    from modules.featurizer.gptq import gptq_int8_weights

    corrected = onnx.ModelProto()
    corrected.CopyFrom(fp32)
    views = calib[:: max(1, len(calib) // GPTQ_IMAGES)][:GPTQ_IMAGES]
    dims = corrected.graph.input[0].type.tensor_type.shape.dim
    one = bool(dims) and dims[0].HasField("dim_value") and dims[0].dim_value == 1
    rounded = gptq_int8_weights(corrected, corrected.graph.input[0].name, views, 1 if one else 4)
    correct_conv_biases(corrected, means, new_weights=rounded)
    for init in corrected.graph.initializer:  # convs the correction skipped keep GPTQ weights
        if init.name in rounded:
            init.CopyFrom(numpy_helper.from_array(rounded[init.name], init.name))
    src, prepped, dst = work / "corrected.onnx", work / "prepped.onnx", work / "int8.onnx"
    onnx.save(corrected, str(src))
    with _quiet():
        quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        excluded: list[str] = []
        if keep_tail_float:
            named = onnx.load(str(prepped))
            _name_nodes(named)
            excluded = float_tail(named)
            onnx.save(named, str(prepped))
        quantize_static(
            str(prepped),
            str(dst),
            _Reader(fp32.graph.input[0].name, calib),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded,
        )
    return dst


def quantized_network(
    fp32: onnx.ModelProto,
    means: dict[str, Any],
    calib: npt.NDArray[np.float32],
    precision: str,
    work: Path,
    keep_tail_float: bool = False,
) -> tuple[Path | None, Path | bytes]:
    """(the int8 file to store or None, the network to judge): int8 under ``work``, or fp32
    (with its means) rewritten to a BFP format by the FPGA emulator (which quantizes only the
    weighted layers), serialized."""
    from modules.accelerators.fpga.rewrite import rewrite

    if precision == "int8":
        int8_file = int8_network(fp32, means, calib, work, keep_tail_float)
        return int8_file, int8_file
    return None, bytes(rewrite(fp32, precision)[0].SerializeToString())


def quantize_imported(
    store: ModelStore,
    ref: str,
    calibration: Path,
    precision: str,
    holdout: float = 0.2,
    threshold: float = 0.98,
    progress: Progress | None = None,
    iou: float | None = None,
) -> dict[str, Any]:
    """Quantize, measure top-1 agreement with fp32 (a detector: its box match rate,
    ``box_match``) on the held-out split and the latency of both on this CPU, record them in the
    manifest, and return the report."""
    import numpy as np
    import onnx

    from modules.accelerators.bfp import get_format
    from modules.featurizer.agreement import agreement

    say = progress or (lambda _step, _done, _total: None)
    manifest = store.get(ref)
    if manifest.origin != "imported":
        raise QuantizeError(
            f"{ref} is not an imported model (built models: `edgefleet models build`)"
        )
    detector = manifest.kind == "detector"
    if detector and (manifest.detector is None or manifest.detector.architecture != "decoded"):
        raise QuantizeError(
            f"{ref} was stored without its detection outputs: import it again with --kind detector"
        )
    if not detector and iou is not None:
        raise QuantizeError(f"--iou is for detectors; {ref} is a classifier (its measure is top-1)")
    if precision != "int8":
        try:
            get_format(precision)
        except (KeyError, ValueError) as exc:
            raise QuantizeError(
                f"--precision {precision!r}: int8 or a BFP format ({exc})"
            ) from None
    calib_files, held_files = split_images(image_files(calibration), holdout)
    split = Split(calibration, calib_files, held_files)
    if detector:
        from modules.featurizer.box_match import MATCH_IOU
        from modules.featurizer.quantize_detector import quantize_detector

        return quantize_detector(
            store, ref, split, precision, threshold, MATCH_IOU if iou is None else iou, say
        )
    calib = _arrays(calib_files, manifest, "reading calibration images", say)
    held = _arrays(held_files, manifest, "reading held-out images", say)
    fp32_path = store.resolve(manifest.featurizer["fp32"])
    say("measuring conv input means", 0, None)
    fp32, means = with_means(onnx.load(str(fp32_path)), manifest.featurizer_input.name, calib)
    softmax = _session(store.resolve(manifest.heads["default"].artifact))
    with tempfile.TemporaryDirectory(prefix="edgefleet-quantize-") as tmp:
        work = Path(tmp)
        say(f"quantizing to {precision}", 0, None)
        quantized_file, network = quantized_network(fp32, means, calib, precision, work)
        quantized = _session(network, int8=quantized_file is not None)
        engine = (
            "onnxruntime static QDQ int8"
            if quantized_file is not None
            else f"onnxruntime running the FPGA emulator's {precision} rewrite"
        )
        say("comparing with fp32 on held-out images", 0, None)
        reference_sess = _session(fp32_path)
        reference = _outputs(softmax, _outputs(reference_sess, held))
        predicted = _outputs(softmax, _outputs(quantized, held)).argmax(1)
        result = agreement(reference, predicted.astype(np.int64))
        say("timing", 0, None)
        fp32_ms = _latency_ms(reference_sess, held[:1])
        quantized_ms = _latency_ms(quantized, held[:1])
        keep_networks(store, manifest, fp32, quantized_file, precision, split, work)
    flagged = record(store, ref, manifest, precision, result["top1_agreement_with_fp32"], threshold)
    say("done", 1, 1)
    return {
        "model": f"{manifest.name}:{manifest.version}",
        "precision": precision,
        "calibration_images": len(calib_files),
        "holdout_images": len(held_files),
        **result,
        "threshold": threshold,
        "flagged": flagged,
        "fp32_ms": round(fp32_ms, 3),
        "quantized_ms": round(quantized_ms, 3),
        "engine": engine,
    }
