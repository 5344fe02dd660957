"""`--calib-data DIR`: FP16/INT8 export of a model with no labelled data at hand (an imported one, or a trained
one whose dataset is elsewhere). Any folder of pictures like the ones the model will see calibrates INT8, and
what the export measures is AGREEMENT WITH FP32, not accuracy: each picture's target is the FP32 model's own
output (its top-1 class; a detector's boxes at predict thresholds), so the metric reads "top-1 agreement with
FP32" (classifiers) or "box mAP against FP32's detections" (detectors). The manifest and the command's output
say so.

INT8: a seeded permutation of the folder; the first images calibrate (up to --calib-images, leaving at least
MIN_HELD), the others measure the agreement, so no picture is both. FP16 needs no calibration: every picture
measures. The task's hooks (edgekit.tasks) preprocess the pictures (a classifier's resize + crop, a
detector's letterbox) and turn FP32's outputs into targets; nothing here branches on the task."""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.data.unlabelled import load_unlabelled
from edgekit.errors import EdgekitError
from edgekit.data.inputs import CalibrationSet, LabelledInputs
from edgekit.data.inputs import relative_path as _rel
from edgekit.export.accuracy import run_onnx
from edgekit.tasks.base import Metric
from edgekit.manifest import Manifest

log = logging.getLogger(__name__)
MIN_HELD = 8  # pictures that measure agreement with FP32 (never calibration pictures)
MAX_HELD = 500  # default cap on them (--eval-images sets it)
NO_LABELS = "none: each target is the FP32 model's own output (agreement with FP32, not accuracy)"


def agreement_metric(hooks) -> Metric:
    """The task's metric scored against FP32's own outputs: renamed so that nobody reads it as accuracy."""
    def metric(outputs: np.ndarray, targets: np.ndarray) -> dict:
        m = hooks.metric(outputs, targets)
        return {**m, "metric": f"{m['metric']}_vs_fp32", "labels": NO_LABELS}

    return metric


def fp16_inputs(manifest: Manifest, hooks, folder: str | Path, fp32_path: Path, *, limit: int = 0
                ) -> tuple[LabelledInputs, Metric]:
    """(every picture of `folder` (up to `limit`, default MAX_HELD) with FP32's outputs as targets, the metric)."""
    images = load_unlabelled(folder, minimum=MIN_HELD, what="--calib-data (FP16's agreement with FP32)")
    idx = np.arange(min(len(images), limit or MAX_HELD))
    return _with_fp32_targets(manifest, hooks, images, idx, fp32_path, folder), agreement_metric(hooks)


def int8_split(manifest: Manifest, hooks, folder: str | Path, fp32_path: Path, *, n: int, minimum: int, seed: int,
               n_tune: int, n_eval: int = 0) -> tuple[CalibrationSet, Callable[[], LabelledInputs], LabelledInputs,
                                                        Metric]:
    """(calibration set, the fallback's tuning inputs (the calibration pictures, FP32 targets; built on demand),
    held-out pictures with FP32 targets, the metric). Raises below `minimum` calibration pictures."""
    if n < minimum:
        raise EdgekitError(f"--calib-images {n} is below the minimum of {minimum}: ranges measured on so few "
                           f"images do not hold on new ones; use --calib-images {minimum} or more")
    need = minimum + MIN_HELD
    images = load_unlabelled(folder, minimum=need, what=f"--calib-data for INT8 ({minimum} to calibrate, "
                             f"--min-calib-images, and {MIN_HELD} others to measure agreement with FP32)")
    order = np.random.default_rng(seed).permutation(len(images))
    n_cal = min(n, len(images) - MIN_HELD)
    if n_cal < n:
        log.warning("%s holds %d pictures: calibrating on %d (asked for %d), measuring on the other %d", folder,
                    len(images), n_cal, n, len(images) - n_cal)
    cal_idx, held_idx = np.sort(order[:n_cal]), np.sort(order[n_cal:][:n_eval or MAX_HELD])
    x = hooks.inputs(manifest, [images.image(int(i)) for i in cal_idx])
    calib = CalibrationSet(x, np.zeros(len(x), np.int64), [_rel(images.paths[int(i)], str(folder)) for i in cal_idx],
                           str(folder), hashlib.sha256(x.tobytes()).hexdigest(), split="unlabelled (--calib-data)")

    def tune() -> LabelledInputs:
        k = min(len(calib), n_tune)
        return LabelledInputs(calib.x[:k], hooks.fp32_targets(run_onnx(fp32_path, calib.x[:k],
                                                                       input_name=manifest.input.name)),
                              {"split": "unlabelled (the calibration pictures)", "root": str(folder), "labels": NO_LABELS})

    held = _with_fp32_targets(manifest, hooks, images, held_idx, fp32_path, folder)
    return calib, tune, held, agreement_metric(hooks)


def _with_fp32_targets(manifest: Manifest, hooks, images, idx: np.ndarray, fp32_path: Path, folder) -> LabelledInputs:
    if hooks.inputs is None or hooks.fp32_targets is None:
        raise EdgekitError(f"--calib-data is not supported for '{hooks.task}' models yet: pass --data with labelled "
                           "images")
    x = hooks.inputs(manifest, [images.image(int(i)) for i in idx])
    targets = hooks.fp32_targets(run_onnx(fp32_path, x, input_name=manifest.input.name))
    listing = "\n".join(_rel(images.paths[int(i)], str(folder)) for i in idx)
    return LabelledInputs(x, targets, {"split": "unlabelled (--calib-data)", "root": str(folder), "images": len(x),
                                       "labels": NO_LABELS,
                                       "image_list_sha256": hashlib.sha256(listing.encode()).hexdigest()})
