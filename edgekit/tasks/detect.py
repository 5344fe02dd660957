"""Detection (ultralytics YOLO, one (1, 4+nc, N) output).

Exports: mAP50-95 on the val split (ultralytics val's thresholds); a seeded calibration pick from train;
agreement = mAP50-95 of the reduced-precision detections against FP32's own (conf >= 0.25) detections; YOLO's
box-decode head always stays float (one 8-bit scale cannot hold pixel coordinates and class scores in the same
tensor: a prototype lost all of its mAP).
Bench: letterbox (the camera loop's LetterboxInput) -> raw output -> the manifest's decoder (+ NMS) + undo the
letterbox (the manifest's thresholds, the camera's defaults); accuracy mAP50-95 and mAP50; agreement = same boxes (count,
classes, IoU >= 0.99 each) at predict thresholds."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.compare import compare_logits
from edgekit.tasks.base import Post, Pre, Task



def _metric(outputs: np.ndarray, targets: np.ndarray, decoder="yolov8") -> dict:
    from edgekit.vision.map import detection_metric

    return detection_metric(outputs, targets, decoder=decoder)


def _agreement(ref: np.ndarray, out: np.ndarray, decoder="yolov8") -> float:
    from edgekit.vision.map import detection_agreement

    return detection_agreement(ref, out, decoder=decoder)


def _parity(ref: np.ndarray, out: np.ndarray, decoder="yolov8") -> dict:
    from edgekit.vision.map import compare_detections, detection_agreement

    raw = {k: v for k, v in compare_logits(ref, out).items() if k != "top1_agreement"}
    det = compare_detections(ref, out, decoder=decoder)
    det.pop("detections_per_image")
    agree = detection_agreement(ref, out, decoder=decoder)
    return {**raw, **det, "map_vs_fp32": agree, "agreement": agree,
            "agreement_kind": "mAP50-95 against the FP32 detections (conf >= 0.25)"}


def _heldout(manifest, data, limit):
    from edgekit.data.yolo import detection_inputs

    return detection_inputs(manifest, data, split="val", limit=limit)


def _calibration(manifest, data, n, minimum, seed, n_tune):
    from edgekit.data.yolo import detection_train_split

    return detection_train_split(manifest, data, n=n, minimum=minimum, seed=seed, n_tune=n_tune)


def _float_nodes(model) -> list[str]:
    from edgekit.export.yolo import head_float_nodes

    return head_float_nodes(model)


def _images(manifest, data, n: int) -> list[np.ndarray]:
    from edgekit.data.yolo import dataset_yaml_for, load_split, read_dataset_yaml

    ds = load_split(read_dataset_yaml(dataset_yaml_for(manifest, data or None)), "val", limit=n)
    return [ds.image(i) for i in range(len(ds))]


def _pipeline(manifest) -> tuple[Pre, Post]:
    from edgekit.vision.decoders import resolve_decoder
    from edgekit.vision.detect import LetterboxInput, postprocess

    letterbox = LetterboxInput(tuple(int(d) for d in manifest.input.shape[2:4]))
    pp = manifest.postprocess  # the model's decoder and thresholds: the camera's defaults too
    decoder = resolve_decoder(pp.decoder, model_dir=manifest.model_dir)

    def post(pred: np.ndarray, lb: Any) -> Any:
        return postprocess(pred, lb, decoder=decoder, conf=pp.conf, iou=pp.iou, max_det=pp.max_det)

    return letterbox, post


DETECT = Task(
    "detect", _metric, _agreement, "mAP50-95 against FP32's detections", _parity, _heldout, _calibration,
    _float_nodes,
    metric_label="mAP50-95", agreement_label="box agreement", agreement_key="detections_agreement",
    e2e_what="letterbox, infer, decode + NMS (the model's conf / IoU / max_det, as the camera) + boxes back to the "
             "source image",
    columns=(("mAP50-95", "accuracy", "value"), ("mAP50", "accuracy", "mAP50"), ("max_rel_err", "parity", "max_rel"),
             ("box_agreement", "parity", "detections_agreement"), ("min_box_iou", "parity", "min_box_iou"),
             ("mAP_vs_ref", "parity", "agreement")),
    images=_images, pipeline=_pipeline)
