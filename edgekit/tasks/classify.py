"""Classification: top-1 on the val split; class-balanced calibration from train; agreement = same top-1.
The bench's pipeline: resize/crop + normalise -> logits -> softmax + top-5."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.compare import compare_logits
from edgekit.export import calibration as cal
from edgekit.export.accuracy import LabelledInputs, classify_inputs, heldout_inputs, top1, top1_agreement, train_split
from edgekit.tasks.base import Post, Pre, Task


def _parity(ref: np.ndarray, out: np.ndarray) -> dict:
    p = compare_logits(ref, out)
    return {**p, "agreement": p["top1_agreement"], "agreement_kind": "top-1"}


def _calibration(manifest, data, n, minimum, seed, n_tune):
    train, root = train_split(manifest, data)
    calib, rest = cal.split_train(manifest, train, root, n, minimum, seed)

    def tune() -> LabelledInputs:  # training images that did not calibrate; all calibrated: those images
        if len(rest):
            return classify_inputs(manifest, rest.subset(range(min(len(rest), n_tune))),
                                   {"split": "train (not calibration)", "root": root})
        return LabelledInputs(calib.x[:n_tune], calib.labels[:n_tune], {"split": "train (calibration images)",
                                                                        "root": root})
    return calib, tune


def _images(manifest, data, n: int) -> list[np.ndarray]:
    from edgekit.data.imagefolder import heldout_for

    val = heldout_for(manifest, data or None, limit=n)
    return [val.image(i) for i in range(len(val))]


def _pipeline(manifest) -> tuple[Pre, Post]:
    from edgekit.vision.preprocess import preprocess_classify

    def pre(img: np.ndarray) -> tuple[np.ndarray, None]:
        return preprocess_classify(img, manifest.input)[None], None

    def post(logits: np.ndarray, _: Any) -> np.ndarray:
        e = np.exp(logits[0] - logits[0].max())
        return np.argsort(-(e / e.sum()))[:5]

    return pre, post


CLASSIFY = Task(
    "classify", top1, top1_agreement, "top-1 agreement", _parity, heldout_inputs, _calibration, lambda model: [],
    metric_label="top-1", agreement_label="top-1 agreement", agreement_key="top1_agreement",
    e2e_what="resize/crop + normalise, infer, softmax + top-5",
    columns=(("top1", "accuracy", "value"), ("max_rel_err", "parity", "max_rel"),
             ("top1_agreement", "parity", "top1_agreement")),
    images=_images, pipeline=_pipeline)
