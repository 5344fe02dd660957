"""What `edgekit bench` does differently per task, in one place: `bench_task(task)`. Nothing else in the bench
branches on the task.

The accuracy metric, the held-out inputs and the parity numbers are edgekit.export.tasks' (the ones the FP16 /
INT8 exports record), so the bench and the manifest never disagree on what "accuracy" means. This module adds
what only the bench needs: decoded held-out images and the application pipeline around the model for the
end-to-end timing (preprocess -> infer -> postprocess, each stage timed; inference-only latency is measured
apart, as trtexec reports GPU compute apart from end-to-end), and the labels the report prints.

    classify: resize/crop + normalise -> logits -> softmax + top-5; accuracy top-1; agreement = same top-1.
    detect:   letterbox (the camera loop's LetterboxInput) -> raw output -> the manifest's decoder (+ NMS) + undo
              the letterbox (the manifest's thresholds, the camera's defaults); accuracy mAP50-95 and mAP50 (ultralytics val's
              thresholds); agreement = same boxes (count, classes, IoU >= 0.99 each) at predict thresholds."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError

E2E_IMAGES = 16  # decoded held-out images the end-to-end timing cycles through

# a stage of the application pipeline: (image or model output, context) -> (result, context)
Pre = Callable[[np.ndarray], tuple[np.ndarray, Any]]
Post = Callable[[np.ndarray, Any], Any]


@dataclass(frozen=True)
class BenchTask:
    task: str
    metric_label: str  # the accuracy metric's name in tables and plots
    agreement_label: str  # what parity's agreement counts, in words
    agreement_key: str  # its key in the parity dict
    e2e_what: str  # what end-to-end covers, in words
    # report columns beyond the latency ones: (column, "accuracy" | "parity", key in that dict)
    columns: tuple[tuple[str, str, str], ...]
    images: Callable[..., list[np.ndarray]]  # (manifest, data, n) -> decoded held-out images, uint8 BGR
    pipeline: Callable[..., tuple[Pre, Post]]  # (manifest) -> (preprocess, postprocess) of one image

    def column_value(self, row: dict, column: str) -> Any:
        for name, where, key in self.columns:
            if name == column:
                return (row.get(where) or {}).get(key)
        raise KeyError(column)


# ---- classification ----------------------------------------------------------------------------------

def _classify_images(manifest, data, n: int) -> list[np.ndarray]:
    from edgekit.data.imagefolder import heldout_for

    val = heldout_for(manifest, data or None, limit=n)
    return [val.image(i) for i in range(len(val))]


def _classify_pipeline(manifest) -> tuple[Pre, Post]:
    from edgekit.vision.preprocess import preprocess_classify

    def pre(img: np.ndarray) -> tuple[np.ndarray, None]:
        return preprocess_classify(img, manifest.input)[None], None

    def post(logits: np.ndarray, _: Any) -> np.ndarray:
        e = np.exp(logits[0] - logits[0].max())
        return np.argsort(-(e / e.sum()))[:5]

    return pre, post


CLASSIFY = BenchTask(
    "classify", "top-1", "top-1 agreement", "top1_agreement", "resize/crop + normalise, infer, softmax + top-5",
    (("top1", "accuracy", "value"), ("max_rel_err", "parity", "max_rel"),
     ("top1_agreement", "parity", "top1_agreement")),
    _classify_images, _classify_pipeline)


# ---- detection ---------------------------------------------------------------------------------------

def _detect_images(manifest, data, n: int) -> list[np.ndarray]:
    from edgekit.data.yolo import dataset_yaml_for, load_split, read_dataset_yaml

    ds = load_split(read_dataset_yaml(dataset_yaml_for(manifest, data or None)), "val", limit=n)
    return [ds.image(i) for i in range(len(ds))]


def _detect_pipeline(manifest) -> tuple[Pre, Post]:
    from edgekit.vision.decoders import resolve_decoder
    from edgekit.vision.detect import LetterboxInput, postprocess

    letterbox = LetterboxInput(tuple(int(d) for d in manifest.input.shape[2:4]))
    pp = manifest.postprocess  # the model's decoder and thresholds: the camera's defaults too
    decoder = resolve_decoder(pp.decoder, model_dir=manifest.model_dir)

    def post(pred: np.ndarray, lb: Any) -> Any:
        return postprocess(pred, lb, decoder=decoder, conf=pp.conf, iou=pp.iou, max_det=pp.max_det)

    return letterbox, post


DETECT = BenchTask(
    "detect", "mAP50-95", "box agreement", "detections_agreement",
    "letterbox, infer, decode + NMS (the model's conf / IoU / max_det, as the camera) + boxes back to the source "
    "image",
    (("mAP50-95", "accuracy", "value"), ("mAP50", "accuracy", "mAP50"), ("max_rel_err", "parity", "max_rel"),
     ("box_agreement", "parity", "detections_agreement"), ("min_box_iou", "parity", "min_box_iou"),
     ("mAP_vs_ref", "parity", "agreement")),
    _detect_images, _detect_pipeline)

TASKS = {"classify": CLASSIFY, "detect": DETECT}


def bench_task(task: str) -> BenchTask:
    try:
        return TASKS[task]
    except KeyError:
        raise EdgekitError(f"edgekit bench knows the tasks {sorted(TASKS)}, not '{task}'") from None


def save_images(images: list[np.ndarray], path: Path) -> None:
    """Decoded images of any sizes in one .npz (plain uint8 arrays: the workers load it without pickle)."""
    np.savez(path, *images)


def load_images(path: str | Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]
