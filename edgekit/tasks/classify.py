"""Classification: the manifest's resize/crop + normalise; top-1 on the val split; class-balanced calibration
from train; agreement = same top-1. The bench's pipeline: resize/crop + normalise -> logits -> softmax + top-5.

Calibration images come from the TRAIN split of the dataset recorded in the manifest; the val split is kept for
measuring accuracy, so no image is both a calibration input and an evaluation input. They are taken round-robin
over classes from a seeded permutation (the first n cover every class evenly); the rest of the train split is
left for tuning. The ONNX INT8 export and the TensorRT calibrator take the same images in the same order."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.compare import compare_logits
from edgekit.data.imagefolder import ImageSet, heldout_for, splits_for
from edgekit.data.inputs import CalibrationSet, LabelledInputs, relative_path
from edgekit.errors import EdgekitError
from edgekit.manifest import Manifest
from edgekit.tasks.base import Post, Pre, Task
from edgekit.vision.preprocess import batch_classify, preprocess_classify

log = logging.getLogger(__name__)


def top1(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Classifier top-1 accuracy (a fraction; drops are reported in points, i.e. percent)."""
    correct = logits.reshape(len(logits), -1).argmax(1) == np.asarray(labels)
    return {"metric": "top1", "value": float(correct.mean()), "n": int(len(labels))}


def top1_agreement(ref: np.ndarray, out: np.ndarray) -> float:
    """Share of inputs whose top-1 class is the same in both outputs."""
    return float((ref.reshape(len(ref), -1).argmax(1) == out.reshape(len(out), -1).argmax(1)).mean())


def classify_inputs(manifest: Manifest, images: ImageSet, source: dict) -> LabelledInputs:
    return LabelledInputs(batch_classify([images.image(i) for i in range(len(images))], manifest.input),
                          images.labels.copy(), source)


def heldout_inputs(manifest: Manifest, data: str | Path | None = None, limit: int = 0) -> LabelledInputs:
    """The val split recorded in the manifest (or of `data`): what accuracy is reported on."""
    val = heldout_for(manifest, data, limit=limit or None)
    root = str(data or manifest.source.get("dataset", {}).get("root"))
    return classify_inputs(manifest, val, {"split": "val", "root": root, "images": len(val)})


def train_split(manifest: Manifest, data: str | Path | None = None) -> tuple[ImageSet, str]:
    """The train split of the dataset recorded in the manifest (or of `data`), never the held-out images."""
    train, _, root = splits_for(manifest, data)
    return train, root


def class_round_robin(labels: np.ndarray, seed: int) -> np.ndarray:
    """All indices, ordered so that every prefix is spread evenly over the classes (seeded)."""
    rng = np.random.default_rng(seed)
    rank = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[rng.permutation(idx)] = np.arange(len(idx))
    return np.lexsort((labels, rank))


def split_train(manifest: Manifest, train: ImageSet, root: str, n: int, minimum: int, seed: int = 0
                ) -> tuple[CalibrationSet, ImageSet]:
    """(calibration set of n images, the remaining train images). Raises below `minimum`."""
    if minimum < 1:
        raise EdgekitError("--min-calib-images must be at least 1")
    if n < minimum:
        raise EdgekitError(f"--calib-images {n} is below the minimum of {minimum}: ranges measured on so few "
                           f"images do not hold on new ones; use --calib-images {minimum} or more")
    if len(train) < minimum:
        raise EdgekitError(f"the train split of {root} has only {len(train)} readable images; INT8 calibration "
                           f"needs at least {minimum} (--min-calib-images): add training images or pass --data "
                           "DIR with a larger ImageFolder of the same classes")
    order = class_round_robin(train.labels, seed)
    calib, rest = order[:n], np.sort(order[n:])
    if len(calib) < n:
        log.warning("the train split of %s has %d images: calibrating on all of them (asked for %d)",
                    root, len(calib), n)
    images = [train.image(int(i)) for i in calib]
    x = batch_classify(images, manifest.input)
    paths = [relative_path(train.paths[int(i)], root) for i in calib]
    digest = hashlib.sha256(x.tobytes()).hexdigest()
    return CalibrationSet(x, train.labels[calib], paths, root, digest), train.subset(rest)


def _parity(ref: np.ndarray, out: np.ndarray) -> dict:
    p = compare_logits(ref, out)
    return {**p, "agreement": p["top1_agreement"], "agreement_kind": "top-1"}


def _calibration(manifest, data, n, minimum, seed, n_tune):
    train, root = train_split(manifest, data)
    calib, rest = split_train(manifest, train, root, n, minimum, seed)

    def tune() -> LabelledInputs:  # training images that did not calibrate; all calibrated: those images
        if len(rest):
            return classify_inputs(manifest, rest.subset(range(min(len(rest), n_tune))),
                                   {"split": "train (not calibration)", "root": root})
        return LabelledInputs(calib.x[:n_tune], calib.labels[:n_tune], {"split": "train (calibration images)",
                                                                        "root": root})
    return calib, tune


def _calibration_paths(manifest, data, n: int, seed: int) -> tuple[list[Path], str]:
    """The first `n` training images in split_train's order (class round-robin, seeded)."""
    train, root = train_split(manifest, data)
    return [Path(train.paths[int(i)]) for i in class_round_robin(train.labels, seed)[:n]], root


def _inputs(manifest: Manifest, images: list[np.ndarray]) -> np.ndarray:
    return batch_classify(images, manifest.input)


def _fp32_targets(fp32: np.ndarray) -> np.ndarray:
    return fp32.reshape(len(fp32), -1).argmax(1)  # FP32's top-1 as the label: top-1 then scores agreement


def _images(manifest, data, n: int) -> list[np.ndarray]:
    val = heldout_for(manifest, data or None, limit=n)
    return [val.image(i) for i in range(len(val))]


def _pipeline(manifest) -> tuple[Pre, Post]:
    def pre(img: np.ndarray) -> tuple[np.ndarray, None]:
        return preprocess_classify(img, manifest.input)[None], None

    def post(logits: np.ndarray, _: Any) -> np.ndarray:
        e = np.exp(logits[0] - logits[0].max())
        return np.argsort(-(e / e.sum()))[:5]

    return pre, post


CLASSIFY = Task(
    "classify", top1, top1_agreement, "top-1 agreement", _parity, heldout_inputs, _calibration, lambda model: [],
    inputs=_inputs, fp32_targets=_fp32_targets,
    input_fields=("layout", "color", "resize", "crop", "scale", "mean", "std", "interpolation"),
    calibration_paths=_calibration_paths, framework="torchvision", dynamic_batch=True,
    fp16_min_agreement=0.99, int8_min_agreement=0.9, trt_min_agreement={"fp32": 1.0, "fp16": 0.98, "int8": 0.95},
    metric_label="top-1", agreement_label="top-1 agreement", agreement_key="top1_agreement",
    agreement_note="", e2e_what="resize/crop + normalise, infer, softmax + top-5",
    columns=(("top1", "accuracy", "value"), ("max_rel_err", "parity", "max_rel"),
             ("top1_agreement", "parity", "top1_agreement")),
    images=_images, pipeline=_pipeline)
