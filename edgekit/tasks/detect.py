"""Detection (ultralytics YOLO, one (1, 4+nc, N) output).

Exports: mAP50-95 on the val split (ultralytics val's thresholds); a seeded calibration pick from train;
agreement = mAP50-95 of the reduced-precision detections against FP32's own (conf >= 0.25) detections; YOLO's
box-decode head always stays float (one 8-bit scale cannot hold pixel coordinates and class scores in the same
tensor: a prototype lost all of its mAP).
Bench: letterbox (the camera loop's LetterboxInput) -> raw output -> the manifest's decoder (+ NMS) + undo the
letterbox (the manifest's thresholds, the camera's defaults); accuracy mAP50-95 and mAP50; agreement = same boxes (count,
classes, IoU >= 0.99 each) at predict thresholds."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.compare import compare_logits
from edgekit.tasks.base import Post, Pre, Task
from edgekit.vision.decoders import resolve_decoder
from edgekit.vision.detect import LetterboxInput, postprocess
from edgekit.vision.map import compare_detections, detection_agreement, detection_metric

# Agreement with FP32: mAP50-95 of the boxes scored against FP32's own (conf >= 0.25) boxes, where IoU 0.95
# counts too, so a faithful INT8 model scores well below 1. Measured on the demo's YOLOv8s@320 (AVX2 CPU): 0.86
# with 7-bit weights (mAP50-95 -0.7 points) vs 0.64 with saturating 8-bit ones (-10.45 points). TensorRT engines
# are held to the same INT8 minimum, and FP32 / FP16 ones to 0.99 / 0.95 (not yet measured on a Jetson).
INT8_MIN_AGREEMENT = 0.7
# FP16: the same metric. A faithful FP16 export (max error 8.4e-3 of the outputs' scale) of the demo's YOLOv8s@320
# after one epoch scored 0.985 on this AVX2 CPU: a less trained detector has more boxes near conf 0.25, and a
# 1e-3 change moves one across. 0.97 still refuses a broken conversion (boxes lost or moved, not nudged).
FP16_MIN_AGREEMENT = 0.97


def _parity(ref: np.ndarray, out: np.ndarray, decoder="yolov8") -> dict:
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


def head_float_nodes(model) -> list[str]:
    """Names of the nodes that decode YOLO's head (DFL softmax and its 1x1 conv, box arithmetic, class
    sigmoid, the concats into `output0`, and any NMS after them): everything between the head's last
    learned convolutions and the graph outputs. They must stay in float for INT8: the output concatenates
    pixel coordinates (0..imgsz) with class scores (0..1), and one 8-bit scale for both zeroes the scores.
    Pass them to the INT8 exporter's exclude list (Int8ExportConfig.exclude_nodes)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    initializers = {i.name for i in model.graph.initializer}

    def is_learned_conv(n) -> bool:  # the DFL conv has Softmax input and fixed weights: it is decode, not learned
        return n.op_type == "Conv" and not any(producer.get(i) is not None and producer[i].op_type == "Softmax"
                                               for i in n.input)

    tail, stack = set(), [o.name for o in model.graph.output]
    while stack:
        n = producer.get(stack.pop())
        if n is None or n.name in tail or is_learned_conv(n):
            continue
        tail.add(n.name)
        stack += [i for i in n.input if i and i not in initializers]
    return sorted(tail)


def _inputs(manifest, images: list[np.ndarray]) -> np.ndarray:
    """Letterboxed to the input's H x W, RGB / 255: the floats of the camera loop's LetterboxInput."""
    from edgekit.vision.detect import letterbox, to_input

    hw = tuple(int(d) for d in manifest.input.shape[2:4])
    return np.concatenate([to_input(letterbox(img, hw)[0]) for img in images])


def _fp32_targets(fp32: np.ndarray, decoder="yolov8") -> np.ndarray:
    """FP32's own detections (predict thresholds, as detection_agreement) as [k, 5] class, x1, y1, x2, y2 rows."""
    from edgekit.vision.detect import decode_output

    targets = np.empty(len(fp32), dtype=object)
    for i in range(len(fp32)):
        d = decode_output(fp32[i:i + 1].astype(np.float32, copy=False), conf=0.25, iou=0.7, decoder=decoder)
        targets[i] = np.hstack([d.classes[:, None].astype(np.float32), d.boxes]).reshape(-1, 5)
    return targets


def _calibration_paths(manifest, data, n: int, seed: int) -> tuple[list[Path], str]:
    from edgekit.data.yolo import detection_calibration_paths

    return detection_calibration_paths(manifest, data, n=n, seed=seed)


def _images(manifest, data, n: int) -> list[np.ndarray]:
    from edgekit.data.yolo import dataset_yaml_for, load_split, read_dataset_yaml

    ds = load_split(read_dataset_yaml(dataset_yaml_for(manifest, data or None)), "val", limit=n)
    return [ds.image(i) for i in range(len(ds))]


def _pipeline(manifest, decoder=None) -> tuple[Pre, Post]:
    """`decoder`: the one task_for resolved (the user's --decoder); else the manifest's (a built-in)."""
    pre = LetterboxInput(tuple(int(d) for d in manifest.input.shape[2:4]))
    pp = manifest.postprocess  # the model's decoder and thresholds: the camera's defaults too
    decoder = decoder or resolve_decoder(pp.decoder, model_dir=manifest.model_dir)

    def post(pred: np.ndarray, lb: Any) -> Any:
        return postprocess(pred, lb, decoder=decoder, conf=pp.conf, iou=pp.iou, max_det=pp.max_det)

    return pre, post


DETECT = Task(
    "detect", detection_metric, detection_agreement, "mAP50-95 against FP32's detections", _parity, _heldout, _calibration,
    head_float_nodes,
    inputs=_inputs, fp32_targets=_fp32_targets, input_fields=("shape", "layout", "color", "resize_mode", "scale", "mean", "std"),
    calibration_paths=_calibration_paths, framework="ultralytics", dynamic_batch=False,
    fp16_min_agreement=FP16_MIN_AGREEMENT, int8_min_agreement=INT8_MIN_AGREEMENT, trt_min_agreement={"fp32": 0.99, "fp16": 0.95, "int8": INT8_MIN_AGREEMENT},
    agreement_note=" (same count and classes, every box at IoU >= 0.99 with its twin, predict thresholds; mAP_vs_ref "
                   "scores the detections against the reference's own)",
    e2e_what="letterbox, infer, decode + NMS (the model's conf / IoU / max_det, as the camera) + boxes back to the "
             "source image",
    metric_label="mAP50-95", agreement_label="box agreement", agreement_key="detections_agreement",
    columns=(("mAP50-95", "accuracy", "value"), ("mAP50", "accuracy", "mAP50"), ("max_rel_err", "parity", "max_rel"),
             ("box_agreement", "parity", "detections_agreement"), ("min_box_iou", "parity", "min_box_iou"),
             ("mAP_vs_ref", "parity", "agreement")),
    images=_images, pipeline=_pipeline)
