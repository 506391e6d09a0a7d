"""Build the face detector (MTCNN, real weights) into the model store: fp32 and int8 ONNX.

The weights are the state dicts inside the ``facenet-pytorch`` wheel, installed without its
dependencies (its pins clash with ours) and read as files. Each network is exported to ONNX
(symbolic batch; the P-Net also symbolic height and width), constant-folded as every built
model is, and, for int8, quantized statically (onnxruntime QDQ, per-channel int8 weights,
uint8 activations) on inputs the fp32 cascade itself produces from photos that are not in
the tests: pyramid levels and crops of the scikit-image object photos, plus the face crops
of scikit-image's LFW subset.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.accelerators.model_store import (
    Artifact,
    DetectorSettings,
    ModelManifest,
    ModelStore,
    Preprocessing,
    TensorSpec,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

FACE_DETECTOR = "face-detector"
SSD_VGG = "ssd-vgg"
DETECTORS = (FACE_DETECTOR, SSD_VGG)
VOC_LABELS = (
    "background aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse "
    "motorbike person pottedplant sheep sofa train tvmonitor"
).split()
PRECISIONS = ("fp32", "int8")
CALIBRATION_PHOTOS = 8  # augmented object photos behind the int8 activation ranges
LFW_FACES = 100  # the first half of scikit-image's LFW subset are faces


class _Batches:
    """onnxruntime CalibrationDataReader over a list of input arrays."""

    def __init__(self, arrays: Sequence[npt.NDArray[np.float32]]) -> None:
        self._left = list(arrays)

    def get_next(self) -> dict[str, Any] | None:
        return {"images": self._left.pop(0)} if self._left else None


def _chunks(array: npt.NDArray[np.float32], size: int = 32) -> Iterator[npt.NDArray[np.float32]]:
    for start in range(0, len(array), size):
        yield array[start : start + size]


def calibration_inputs(fp32: dict[str, Path]) -> dict[str, list[npt.NDArray[np.float32]]]:
    """What each network sees when the fp32 cascade runs on the calibration photos."""
    import cv2
    import numpy as np
    from skimage import data

    from modules.accelerators import detection as det
    from modules.accelerators.mtcnn import Cascade, to_input
    from modules.featurizer.evalset import calibration_images

    settings = DetectorSettings()
    cascade = Cascade(fp32, settings)
    found: dict[str, list[npt.NDArray[np.float32]]] = {"pnet": [], "rnet": [], "onet": []}
    for rgb in calibration_images(CALIBRATION_PHOTOS):
        height, width = rgb.shape[:2]
        for scale in det.pyramid_scales(height, width, settings.min_face, settings.factor)[::2]:
            h, w = det.scaled_size(height, width, scale)
            found["pnet"].append(to_input(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)))
        boxes = cascade.propose(rgb)[:64]
        if len(boxes):
            found["rnet"].append(to_input(det.crops(rgb, boxes, 24)))
            refined = cascade.refine(rgb, boxes, "rnet", 0.0)[:32]
            if len(refined):
                found["onet"].append(to_input(det.crops(rgb, refined, 48)))
    faces = (np.asarray(data.lfw_subset()[:LFW_FACES]) * 255).astype(np.uint8)
    for stage, size in (("rnet", 24), ("onet", 48)):
        rgb_faces = np.stack(
            [cv2.cvtColor(cv2.resize(f, (size, size)), cv2.COLOR_GRAY2RGB) for f in faces]
        )
        found[stage].extend(_chunks(to_input(rgb_faces)))
    cascade.close()
    return found


def stage_macs(nets: dict[str, Any]) -> int:
    """Multiply-accumulates of one window of each network (P-Net 12x12, R-Net 24, O-Net 48)."""
    from modules.featurizer.architectures import count_macs
    from modules.featurizer.mtcnn_nets import STAGE_SIZES, FirstOutput

    return sum(
        count_macs(FirstOutput(net), STAGE_SIZES.get(stage, 12)) for stage, net in nets.items()
    )


def build_detector(
    name: str,
    store: ModelStore,
    precisions: Sequence[str] = PRECISIONS,
    progress: Callable[[str], None] | None = None,
) -> ModelManifest:
    from modules.featurizer.build import BuildError, _quiet, optimize_basic, quantize_int8
    from modules.featurizer.mtcnn_nets import STAGES, WEIGHTS_DIST, export_stage, load_stage

    if name == SSD_VGG:
        return build_ssd(name, store, progress)
    if name != FACE_DETECTOR:
        raise BuildError(f"unknown detector {name!r}; buildable: {', '.join(DETECTORS)}")
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or "fp32" not in precisions:
        raise BuildError(f"a detector's precisions must include fp32 and be among {PRECISIONS}")
    say = progress or (lambda _msg: None)
    say(f"loading MTCNN's weights from {WEIGHTS_DIST}")
    try:
        nets = {stage: load_stage(stage) for stage in STAGES}
    except FileNotFoundError as exc:
        raise BuildError(str(exc)) from None
    stages: dict[str, dict[str, Artifact]] = {stage: {} for stage in STAGES}
    calibration: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="edgefleet-build-") as tmp:
        work = Path(tmp)
        fp32: dict[str, Path] = {}
        for stage, net in nets.items():
            say(f"exporting the {stage} to ONNX")
            raw = work / f"{stage}-raw.onnx"
            with _quiet():
                export_stage(net, stage, raw)
            fp32[stage] = work / f"{stage}-fp32.onnx"
            optimize_basic(raw, fp32[stage])
            stages[stage]["fp32"] = store.add_artifact(fp32[stage])
        if "int8" in precisions:
            say("collecting calibration inputs with the fp32 cascade")
            inputs = calibration_inputs(fp32)
            for stage in STAGES:
                say(f"quantizing the {stage} to int8 QDQ")
                int8 = work / f"{stage}-int8.onnx"
                quantize_int8(fp32[stage], int8, _Batches(inputs[stage]), work)
                stages[stage]["int8"] = store.add_artifact(int8)
            calibration["int8"] = (
                "static QDQ per network, MinMax, per-channel int8 weights, uint8 activations; "
                f"pyramid levels and crops of {CALIBRATION_PHOTOS} augmented scikit-image object "
                f"photos (seed 7) as the fp32 cascade makes them, and {LFW_FACES} LFW face crops"
            )
    manifest = ModelManifest(
        name=name,
        version="1",
        architecture="MTCNN (P-Net, R-Net, O-Net)",
        description="face detector, MTCNN with its published weights (facenet-pytorch)",
        synthetic_weights=False,
        weights_source=f"PyPI {WEIGHTS_DIST} {version(WEIGHTS_DIST)} (data/{{p,r,o}}net.pt)",
        featurizer=dict(stages["pnet"]),
        featurizer_input=TensorSpec(name="images", shape=["batch", 3, "height", "width"]),
        featurizer_output=TensorSpec(name="prob", shape=["batch", 1, "rows", "cols"]),
        feature_dim=0,
        preprocessing=Preprocessing(
            scale=1.0, mean=(127.5, 127.5, 127.5), std=(128.0, 128.0, 128.0)
        ),
        featurizer_macs=stage_macs(nets),
        calibration=calibration,
        kind="detector",
        stages=stages,
        detector=DetectorSettings(),
    )
    store.save(manifest)
    say(f"stored {name} in {store.root}")
    return manifest


def build_ssd(
    name: str, store: ModelStore, progress: Callable[[str], None] | None = None
) -> ModelManifest:
    """SSD300-VGG16 with SYNTHETIC weights, fp32 only: what such a detector costs, not what it
    finds (its class scores stay near uniform, so it reports no boxes)."""
    from modules.featurizer.architectures import count_macs
    from modules.featurizer.build import _quiet, optimize_basic
    from modules.featurizer.ssd_vgg import SIZE, VOC_CLASSES, export, synthetic

    say = progress or (lambda _msg: None)
    say("constructing SSD300-VGG16 (synthetic weights)")
    net = synthetic(name)
    macs = count_macs(net, SIZE)
    with tempfile.TemporaryDirectory(prefix="edgefleet-build-") as tmp:
        work = Path(tmp)
        say("exporting SSD300-VGG16 to ONNX")
        with _quiet():
            export(net, work / "ssd-raw.onnx")
        optimize_basic(work / "ssd-raw.onnx", work / "ssd-fp32.onnx")
        artifact = store.add_artifact(work / "ssd-fp32.onnx")
    manifest = ModelManifest(
        name=name,
        version="1",
        architecture="SSD300, VGG-16 backbone (8732 anchors, 21 VOC classes)",
        description="SSD300-VGG16 detector, SYNTHETIC weights (for cost and latency only)",
        synthetic_weights=True,
        weights_source=f"synthetic: seeded normal init (crc32 of {name!r})",
        featurizer={"fp32": artifact},
        featurizer_input=TensorSpec(name="images", shape=["batch", 3, SIZE, SIZE]),
        featurizer_output=TensorSpec(name="conf", shape=["batch", 8732, VOC_CLASSES]),
        feature_dim=0,
        preprocessing=Preprocessing(resize_short_side=SIZE, crop=SIZE),
        featurizer_macs=macs,
        kind="detector",
        stages={"ssd": {"fp32": artifact}},
        detector=DetectorSettings(
            architecture="ssd",
            labels=list(VOC_LABELS),
            thresholds=(0.5, 0.0, 0.0),
            stage_nms=0.45,
        ),
    )
    store.save(manifest)
    say(f"stored {name} in {store.root}")
    return manifest
