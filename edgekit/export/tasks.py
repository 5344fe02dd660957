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
from dataclasses import dataclass, replace
from functools import partial
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


CLASSIFY = TaskHooks("classify", top1, top1_agreement, "top-1 agreement", _classify_parity, heldout_inputs,
                     _classify_calibration, lambda model: [])


# ---- detection ---------------------------------------------------------------------------------------

def _detect_metric(outputs: np.ndarray, targets: np.ndarray, decoder="yolov8") -> dict:
    from edgekit.vision.map import detection_metric

    return detection_metric(outputs, targets, decoder=decoder)


def _detect_agreement(ref: np.ndarray, out: np.ndarray, decoder="yolov8") -> float:
    from edgekit.vision.map import detection_agreement

    return detection_agreement(ref, out, decoder=decoder)


def _detect_parity(ref: np.ndarray, out: np.ndarray, decoder="yolov8") -> dict:
    from edgekit.vision.map import compare_detections, detection_agreement

    raw = {k: v for k, v in compare_logits(ref, out).items() if k != "top1_agreement"}
    det = compare_detections(ref, out, decoder=decoder)
    det.pop("detections_per_image")
    agree = detection_agreement(ref, out, decoder=decoder)
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


DETECT = TaskHooks("detect", _detect_metric, _detect_agreement, "mAP50-95 against FP32's detections",
                   _detect_parity, _detect_heldout, _detect_calibration, _detect_float_nodes)

HOOKS = {"classify": CLASSIFY, "detect": DETECT}


def task_hooks(manifest: Manifest, decoder: str = "") -> TaskHooks:
    """The manifest's task's hooks; a detector's outputs are read by the decoder its manifest names (`decoder`:
    the user's --decoder, which a plug-in recorded in the manifest needs)."""
    try:
        hooks = HOOKS[manifest.task]
    except KeyError:
        raise EdgekitError(f"{manifest.model_dir}: FP16/INT8 export knows the tasks {sorted(HOOKS)}, not "
                           f"'{manifest.task}'") from None
    if manifest.postprocess is None:
        return hooks
    from edgekit.vision.decoders import resolve_decoder

    dec = resolve_decoder(manifest.postprocess.decoder, decoder, model_dir=manifest.model_dir)
    return replace(hooks, metric=partial(hooks.metric, decoder=dec), agreement=partial(hooks.agreement, decoder=dec),
                   parity=partial(hooks.parity, decoder=dec))
