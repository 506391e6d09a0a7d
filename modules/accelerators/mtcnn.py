"""MTCNN on onnxruntime: P-Net over an image pyramid, then R-Net and O-Net on square crops.

The networks are three ONNX graphs of the model store (``stages`` of the manifest), or in a BFP
format (``bfp8``, ``msfp9``) the fp32 ones rewritten at load with the FPGA emulator's numerics
(``bfp_at_load``); every decision between them (scales, proposals, regression, NMS, crops) is in
``detection.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modules.accelerators import detection as det
from modules.accelerators.bfp_at_load import is_bfp, rewritten
from modules.accelerators.model_store import DetectorSettings, ModelStore
from modules.accelerators.session import AcceleratorError, NetworkSession

if TYPE_CHECKING:
    import numpy.typing as npt

STAGES = ("pnet", "rnet", "onet")
PIXEL_MEAN = 127.5
PIXEL_SCALE = 0.0078125  # 1 / 128: pixels to about [-1, 1]
CROP_MACS = {"rnet": 1_530_768, "onet": 12_909_952}  # multiply-accumulates per 24 / 48 crop


def pnet_macs(height: int, width: int) -> int:
    """Multiply-accumulates of the P-Net on one height x width level: 3x3 convs to 10, 16, 32
    channels (a 2x2 ceil-mode max pool after the first), then 1x1 convs to 2 + 4 channels."""
    h, w = height - 2, width - 2
    macs = h * w * 10 * 27
    h, w = math.ceil((h - 2) / 2) + 1 - 2, math.ceil((w - 2) / 2) + 1 - 2
    macs += h * w * 16 * 90
    h, w = h - 2, w - 2
    return macs + h * w * (32 * 144 + 6 * 32)


def to_input(pixels: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """[..., H, W, 3] RGB pixels (uint8 or float) -> [N, 3, H, W] float32 as the nets were
    trained."""
    x = (pixels.astype(np.float32) - PIXEL_MEAN) * PIXEL_SCALE
    x = x.reshape(-1, *pixels.shape[-3:])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class Cascade:
    """The three stage sessions plus the settings; ``detect(rgb)`` -> detections."""

    last_device_ms: float | None = None  # set by the FPGA emulator's wrapper

    def __init__(
        self,
        paths: Mapping[str, Path | bytes | NetworkSession],
        settings: DetectorSettings,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        providers: list[Any] | None = None,
    ) -> None:
        import onnxruntime as ort

        from modules.accelerators.cpu import cpu_flags, int8_saturates, session_options

        self.settings = settings
        exact = precision == "int8" and int8_saturates(cpu_flags())
        self._sessions: dict[str, NetworkSession] = {}
        for stage in STAGES:
            path = paths[stage]
            if not isinstance(path, Path | bytes):  # a network held by another device
                self._sessions[stage] = path
                continue
            try:
                self._sessions[stage] = ort.InferenceSession(
                    path if isinstance(path, bytes) else str(path),
                    sess_options=session_options(threads, exact_int8=exact),
                    providers=providers or ["CPUExecutionProvider"],
                )
            except Exception as exc:  # onnxruntime raises its own exception types
                raise AcceleratorError(f"onnxruntime cannot load the {stage}: {exc}") from exc
        used = self._sessions["pnet"].get_providers()[0]
        self.engine = f"onnxruntime {ort.__version__} {used}"
        if is_bfp(precision):
            self.engine += f" (the FPGA emulator's {precision} numerics)"
        self.last_macs = 0  # multiply-accumulates of the last ``detect`` (all networks)

    def _run(self, stage: str, batch: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        out: list[npt.NDArray[np.float32]] = self._sessions[stage].run(None, {"images": batch})
        return out

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[det.Detection]:
        height, width = rgb.shape[:2]
        self.last_macs = 0
        boxes = self.propose(rgb)
        table = det.summed_area(rgb)
        boxes = self.refine(rgb, boxes, "rnet", self.settings.thresholds[1], table)
        boxes = self.refine(rgb, boxes, "onet", self.settings.thresholds[2], table)
        boxes = boxes[: self.settings.max_detections]
        xywh = det.normalized_xywh(boxes, height, width)
        label = self.settings.labels[0]
        return [
            det.Detection(
                box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                score=float(s),
                class_id=0,
                label=label,
            )
            for b, s in zip(xywh, boxes[:, 4], strict=True)
            if b[2] > 0 and b[3] > 0
        ]

    def propose(self, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """P-Net over the pyramid: [K, 5] squared candidate boxes (corners + score)."""
        import cv2

        s = self.settings
        height, width = rgb.shape[:2]
        found: list[npt.NDArray[np.float32]] = []
        for scale in det.pyramid_scales(height, width, s.min_face, s.factor):
            h, w = det.scaled_size(height, width, scale)
            level = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            prob, reg = self._run("pnet", to_input(level))
            self.last_macs += pnet_macs(h, w)
            boxes, deltas = det.proposals(prob[0, 0], reg[0], scale, s.thresholds[0])
            keep = det.nms(boxes, boxes[:, 4], s.level_nms)
            found.append(np.concatenate([boxes[keep], deltas[keep]], axis=1))
        every = np.concatenate(found) if found else np.zeros((0, 9), np.float32)
        keep = det.nms(every, every[:, 4], s.stage_nms)
        every = every[keep]
        boxes = det.regress(every[:, :5], every[:, 5:9])
        return det.square(boxes)

    def refine(
        self,
        rgb: npt.NDArray[np.uint8],
        boxes: npt.NDArray[np.float32],
        stage: str,
        threshold: float,
        table: npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.float32]:
        """R-Net or O-Net on square crops of ``boxes``: survivors, regressed (and squared for
        the next stage; the O-Net's final boxes keep their regressed shape)."""
        if not len(boxes):
            return boxes
        size = 24 if stage == "rnet" else 48
        outputs = self._run(stage, to_input(det.crops(rgb, boxes, size, table)))
        self.last_macs += len(boxes) * CROP_MACS[stage]
        prob, deltas = outputs[0][:, 0], outputs[1]
        passed = prob >= threshold
        boxes = boxes[passed].copy()
        boxes[:, 4] = prob[passed]
        deltas = deltas[passed]
        if stage == "rnet":
            keep = det.nms(boxes, boxes[:, 4], self.settings.stage_nms)
            return det.square(det.regress(boxes[keep], deltas[keep]))
        boxes = det.regress(boxes, deltas)
        keep = det.nms(boxes, boxes[:, 4], self.settings.stage_nms, mode="min")
        return boxes[keep]

    def close(self) -> None:
        self._sessions.clear()


def open_cascade(
    store: ModelStore,
    model: str,
    precision: str = "fp32",
    threads: int | None = None,
    providers: list[Any] | None = None,
) -> Cascade:
    manifest = store.get(model)
    if manifest.detector is None or set(manifest.stages) != set(STAGES):
        raise AcceleratorError(f"{model} is not a cascaded (MTCNN) detector")
    paths: dict[str, Path | bytes] = {}
    for stage, variants in manifest.stages.items():
        if precision in variants:
            paths[stage] = store.resolve(variants[precision])
        elif is_bfp(precision) and "fp32" in variants:
            paths[stage] = rewritten(
                store.resolve(variants["fp32"]), precision, f"{model}'s {stage}"
            )
        else:
            raise AcceleratorError(
                f"{model} has no {precision} {stage} (available: {', '.join(sorted(variants))}, "
                "or a BFP format such as bfp8)"
            )
    return Cascade(
        paths, manifest.detector, precision=precision, threads=threads, providers=providers
    )
