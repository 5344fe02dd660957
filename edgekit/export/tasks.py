"""What the reduced-precision exports need from a model's task, in one place: which held-out inputs score
it, which training images calibrate and tune it, the metric and the label-free agreement with FP32, the
parity numbers recorded, and the nodes that must never be quantized. fp16.py and int8.py ask
`task_hooks(manifest)` and never branch on the task themselves.

    classify: top-1 on the val split; class-balanced calibration from train; agreement = same top-1.
    detect:   mAP50-95 on the val split (ultralytics val's thresholds); a seeded calibration pick from train;
              agreement = mAP50-95 of the reduced-precision detections against FP32's own (conf >= 0.25)
              detections; YOLO's box-decode head always stays float (one 8-bit scale cannot hold pixel
              coordinates and class scores in the same tensor: a prototype lost all of its mAP)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.compare import compare_logits
from edgekit.errors import EdgekitError
from edgekit.export import calibration as cal
from edgekit.export.accuracy import (Agreement, LabelledInputs, Metric, classify_inputs, heldout_inputs, top1,
                                     top1_agreement, train_split)
from edgekit.manifest import Manifest

# (manifest, --data, n calibration images, minimum, seed, n tuning images) -> (calibration set, a function
# that builds the tuning inputs: training images that did not calibrate, built only when the fallback runs)
Calibration = Callable[[Manifest, "str | Path | None", int, int, int, int],
                       tuple[cal.CalibrationSet, Callable[[], LabelledInputs]]]


@dataclass(frozen=True)
class TaskHooks:
    task: str
    metric: Metric  # scores outputs against targets; budgets are in points of it
    agreement: Agreement  # (FP32 outputs, reduced-precision outputs) -> fraction in [0, 1], label-free
    agreement_name: str  # what the agreement is, in words, for messages
    parity: Callable[[np.ndarray, np.ndarray], dict]  # the numbers recorded against the FP32 reference
    heldout: Callable[[Manifest, "str | Path | None", int], LabelledInputs]
    calibration: Calibration
    float_nodes: Callable[[object], list[str]]  # onnx.ModelProto -> nodes that are never quantized
    # --calib-data (unlabelled pictures): decoded BGR images -> model inputs [N, ...] by the manifest's own
    # preprocessing; FP32's outputs -> the targets the metric scores against (agreement with FP32, no labels)
    inputs: Callable[[Manifest, list], np.ndarray] = None
    fp32_targets: Callable[[np.ndarray], np.ndarray] = None


# ---- classification ----------------------------------------------------------------------------------

def _classify_parity(ref: np.ndarray, out: np.ndarray) -> dict:
    p = compare_logits(ref, out)
    return {**p, "agreement": p["top1_agreement"], "agreement_kind": "top-1"}


def _classify_calibration(manifest, data, n, minimum, seed, n_tune):
    train, root = train_split(manifest, data)
    calib, rest = cal.split_train(manifest, train, root, n, minimum, seed)

    def tune() -> LabelledInputs:  # training images that did not calibrate; all calibrated: those images
        if len(rest):
            return classify_inputs(manifest, rest.subset(range(min(len(rest), n_tune))),
                                   {"split": "train (not calibration)", "root": root})
        return LabelledInputs(calib.x[:n_tune], calib.labels[:n_tune], {"split": "train (calibration images)",
                                                                        "root": root})
    return calib, tune


def _classify_inputs(manifest: Manifest, images: list) -> np.ndarray:
    from edgekit.vision.preprocess import batch_classify

    return batch_classify(images, manifest.input)


def _classify_targets(fp32: np.ndarray) -> np.ndarray:
    return fp32.reshape(len(fp32), -1).argmax(1)  # FP32's top-1 as the label: top-1 scores agreement


CLASSIFY = TaskHooks("classify", top1, top1_agreement, "top-1 agreement", _classify_parity, heldout_inputs,
                     _classify_calibration, lambda model: [], _classify_inputs, _classify_targets)


# ---- detection ---------------------------------------------------------------------------------------

def _detect_metric(outputs: np.ndarray, targets: np.ndarray) -> dict:
    from edgekit.vision.map import detection_metric

    return detection_metric(outputs, targets)


def _detect_agreement(ref: np.ndarray, out: np.ndarray) -> float:
    from edgekit.vision.map import detection_agreement

    return detection_agreement(ref, out)


def _detect_parity(ref: np.ndarray, out: np.ndarray) -> dict:
    from edgekit.vision.map import compare_detections, detection_agreement

    raw = {k: v for k, v in compare_logits(ref, out).items() if k != "top1_agreement"}
    det = compare_detections(ref, out)
    det.pop("detections_per_image")
    agree = detection_agreement(ref, out)
    return {**raw, **det, "map_vs_fp32": agree, "agreement": agree,
            "agreement_kind": "mAP50-95 against the FP32 detections (conf >= 0.25)"}


def _detect_heldout(manifest, data, limit):
    from edgekit.data.yolo import detection_inputs

    return detection_inputs(manifest, data, split="val", limit=limit)


def _detect_calibration(manifest, data, n, minimum, seed, n_tune):
    from edgekit.data.yolo import detection_train_split

    return detection_train_split(manifest, data, n=n, minimum=minimum, seed=seed, n_tune=n_tune)


def _detect_float_nodes(model) -> list[str]:
    from edgekit.export.yolo import head_float_nodes

    return head_float_nodes(model)


def _detect_inputs(manifest: Manifest, images: list) -> np.ndarray:
    from edgekit.vision.detect import letterbox, to_input

    hw = tuple(manifest.input.shape[2:4])
    return np.concatenate([to_input(letterbox(img, hw)[0]) for img in images])


def _detect_targets(fp32: np.ndarray) -> np.ndarray:
    """FP32's own detections (predict thresholds, as detection_agreement) as [k, 5] class, x1, y1, x2, y2 rows."""
    from edgekit.vision.detect import decode_output

    targets = np.empty(len(fp32), dtype=object)
    for i in range(len(fp32)):
        d = decode_output(fp32[i:i + 1].astype(np.float32, copy=False), conf=0.25, iou=0.7)
        targets[i] = np.hstack([d.classes[:, None].astype(np.float32), d.boxes]).reshape(-1, 5)
    return targets


DETECT = TaskHooks("detect", _detect_metric, _detect_agreement, "mAP50-95 against FP32's detections",
                   _detect_parity, _detect_heldout, _detect_calibration, _detect_float_nodes, _detect_inputs,
                   _detect_targets)

HOOKS = {"classify": CLASSIFY, "detect": DETECT}


def task_hooks(manifest: Manifest) -> TaskHooks:
    try:
        return HOOKS[manifest.task]
    except KeyError:
        raise EdgekitError(f"{manifest.model_dir}: FP16/INT8 export knows the tasks {sorted(HOOKS)}, not "
                           f"'{manifest.task}'") from None
