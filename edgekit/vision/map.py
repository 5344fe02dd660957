"""Detection mAP in numpy, computed the way ultralytics' `val` computes it (8.4): predictions matched to
ground truth greedily in descending confidence, once per IoU threshold 0.50:0.05:0.95 and only within a
class; per-class AP from the precision envelope by COCO's 101-point interpolation (trapezoid rule); mAP is
the mean over the classes that have labels. Like ultralytics, matching happens in the network-input
(letterboxed) frame, so predictions are not clipped to the source image. No torch."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekit.vision.decoders import Decoder
from edgekit.vision.detect import Detections, box_iou, decode_output

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
_AP_X = np.linspace(0, 1, 101)
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz


def match_predictions(pred_cls: np.ndarray, true_cls: np.ndarray, iou: np.ndarray,
                      thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """(D, T) bool: is each prediction (columns of iou, in descending confidence) a true positive at each
    IoU threshold? iou is (labels, predictions). Each label is claimed by at most one prediction per
    threshold: the most confident prediction takes the unclaimed label it overlaps most."""
    correct = np.zeros((len(pred_cls), len(thresholds)), bool)
    if not len(pred_cls) or not len(true_cls):
        return correct
    iou = iou * (true_cls[:, None] == pred_cls[None, :])
    matched = np.zeros((len(true_cls), len(thresholds)), bool)
    cols = np.arange(len(thresholds))
    for j in np.flatnonzero((iou >= thresholds.min()).any(0)):
        available = np.where(matched, 0.0, iou[:, j, None])
        k = available.argmax(0)
        correct[j] = available[k, cols] >= thresholds
        matched[k, cols] |= correct[j]
    return correct


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope, 101-point interpolation; precision drops to 0 after the last
    recall reached (ultralytics 8.4's sentinels)."""
    mrec = np.concatenate(([0.0], recall, [recall[-1] if len(recall) else 1.0], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    return float(_trapezoid(np.interp(_AP_X, mrec, mpre), _AP_X))


def _smooth(y: np.ndarray, f: float = 0.05) -> np.ndarray:
    nf = round(len(y) * f * 2) // 2 + 1  # box filter of fraction f, as ultralytics smooths F1
    p = np.ones(nf // 2)
    yp = np.concatenate((p * y[0], y, p * y[-1]), 0)
    return np.convolve(yp, np.ones(nf) / nf, mode="valid")


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
                 eps: float = 1e-16) -> dict:
    """AP (classes with labels, T thresholds), and precision/recall at the confidence of maximum mean F1."""
    i = np.argsort(-conf)
    tp, conf, pred_cls = tp[i], conf[i], pred_cls[i]
    classes, n_labels = np.unique(target_cls, return_counts=True)
    ap = np.zeros((len(classes), tp.shape[1]))
    x = np.linspace(0, 1, 1000)
    p_curve, r_curve = np.zeros((len(classes), 1000)), np.zeros((len(classes), 1000))
    for ci, c in enumerate(classes):
        k = pred_cls == c
        if not k.any():
            continue
        tpc, fpc = tp[k].cumsum(0), (1 - tp[k]).cumsum(0)
        recall = tpc / (n_labels[ci] + eps)
        precision = tpc / (tpc + fpc)
        r_curve[ci] = np.interp(-x, -conf[k], recall[:, 0], left=0)
        p_curve[ci] = np.interp(-x, -conf[k], precision[:, 0], left=1)
        for j in range(tp.shape[1]):
            ap[ci, j] = compute_ap(recall[:, j], precision[:, j])
    f1 = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
    best = int(_smooth(f1.mean(0), 0.1).argmax()) if len(classes) else 0
    return {"classes": classes, "n_labels": n_labels, "ap": ap, "precision": p_curve[:, best],
            "recall": r_curve[:, best]}


@dataclass
class DetectionEvaluator:
    """Accumulate per-image predictions and ground truth (same coordinate frame), then `result()`."""

    names: list[str] | None = None
    _tp: list = field(default_factory=list)
    _conf: list = field(default_factory=list)
    _pred_cls: list = field(default_factory=list)
    _target_cls: list = field(default_factory=list)
    images: int = 0

    def add(self, det: Detections, gt_classes: np.ndarray, gt_boxes: np.ndarray) -> None:
        order = np.argsort(-det.scores, kind="stable")  # matching walks predictions by confidence
        boxes, scores, classes = det.boxes[order], det.scores[order], det.classes[order]
        gt_classes = np.asarray(gt_classes, np.int64).reshape(-1)
        if len(gt_classes) and len(boxes):
            tp = match_predictions(classes, gt_classes, box_iou(np.asarray(gt_boxes, np.float32).reshape(-1, 4), boxes))
        else:
            tp = np.zeros((len(scores), len(IOU_THRESHOLDS)), bool)
        self._tp.append(tp)
        self._conf.append(scores)
        self._pred_cls.append(classes)
        self._target_cls.append(gt_classes)
        self.images += 1

    def result(self) -> dict:
        target = np.concatenate(self._target_cls) if self._target_cls else np.zeros(0, np.int64)
        out = {"images": self.images, "instances": int(len(target)), "mAP50": 0.0, "mAP50-95": 0.0,
               "precision": 0.0, "recall": 0.0, "per_class": {}}
        if not len(target):
            return out
        r = ap_per_class(np.concatenate(self._tp).astype(np.float64), np.concatenate(self._conf).astype(np.float64),
                         np.concatenate(self._pred_cls), target)
        ap = r["ap"]
        out.update({"mAP50": float(ap[:, 0].mean()), "mAP50-95": float(ap.mean()),
                    "precision": float(r["precision"].mean()), "recall": float(r["recall"].mean())})
        for ci, c in enumerate(r["classes"]):
            name = self.names[c] if self.names and c < len(self.names) else str(int(c))
            out["per_class"][name] = {"instances": int(r["n_labels"][ci]), "AP50": float(ap[ci, 0]),
                                      "AP50-95": float(ap[ci].mean())}
        return out


def detection_metric(outputs: np.ndarray, targets: np.ndarray, *, conf: float = 0.001, iou: float = 0.7,
                     max_det: int = 300, decoder: str | Decoder = "yolov8") -> dict:
    """The accuracy hook of edgekit.export.accuracy (`Metric`): model outputs [N, 4+nc, A] (or [N, K, 6]) and
    targets, an object array of N float32 [k, 5] rows (class, x1, y1, x2, y2) in network-input pixels (what
    edgekit.data.yolo.detection_inputs builds). Returns {"metric": "mAP50-95", "value", "n", "mAP50", ...}.
    Thresholds are ultralytics val's (conf 0.001, NMS IoU 0.7, multi-label)."""
    ev = DetectionEvaluator()
    for i in range(len(outputs)):
        det = decode_output(outputs[i:i + 1].astype(np.float32, copy=False), decoder=decoder, conf=conf, iou=iou,
                            max_det=max_det, multi_label=True)
        gt = np.asarray(targets[i], np.float32).reshape(-1, 5)
        ev.add(det, gt[:, 0].astype(np.int64), gt[:, 1:])
    r = ev.result()
    return {"metric": "mAP50-95", "value": r["mAP50-95"], "n": int(len(outputs)), "mAP50": r["mAP50"],
            "precision": r["precision"], "recall": r["recall"], "instances": r["instances"]}


def compare_detections(ref: np.ndarray, test: np.ndarray, *, conf: float = 0.25, iou: float = 0.7,
                       min_box_iou: float = 0.99, decoder: str | Decoder = "yolov8",
                       ref_decoder: str | Decoder | None = None) -> dict:
    """Parity of two detectors' outputs [N, ...] (e.g. PyTorch vs ONNX, FP32 vs FP16) as detections, the
    detection counterpart of top-1 agreement: an image agrees when both give the same number of boxes, the
    same classes, and every box matches its twin one-to-one at IoU >= min_box_iou (predict thresholds).
    `decoder` reads `test`, `ref_decoder` (default: the same) reads `ref`: a graph ending in NMS against its
    PyTorch model's raw head."""
    agree, worst, counts = 0, 1.0, []
    ref_decoder = decoder if ref_decoder is None else ref_decoder
    for i in range(len(ref)):
        a = decode_output(ref[i:i + 1].astype(np.float32, copy=False), decoder=ref_decoder, conf=conf, iou=iou)
        b = decode_output(test[i:i + 1].astype(np.float32, copy=False), decoder=decoder, conf=conf, iou=iou)
        counts.append([len(a), len(b)])
        same, image_iou = len(a) == len(b), 1.0
        if same and len(a):
            m = box_iou(a.boxes, b.boxes)
            j = m.argmax(1)
            same = bool(np.array_equal(a.classes, b.classes[j]) and len(set(j.tolist())) == len(j))
            image_iou = float(m[np.arange(len(a)), j].min())
        worst = min(worst, image_iou)
        agree += same and image_iou >= min_box_iou
    return {"n": int(len(ref)), "detections_agreement": agree / max(len(ref), 1), "min_box_iou": worst,
            "detections_per_image": counts, "thresholds": {"conf": conf, "iou": iou, "min_box_iou": min_box_iou}}


def detection_agreement(ref: np.ndarray, test: np.ndarray, *, conf: float = 0.25, iou: float = 0.7,
                        decoder: str | Decoder = "yolov8") -> float:
    """Label-free agreement of a reduced-precision detector with its reference, in [0, 1]: the mAP50-95 of
    `test`'s detections (val thresholds) scored against `ref`'s own detections at predict thresholds
    (conf >= `conf`) taken as ground truth, divided by the reference's score against itself (0.995 where it
    finds anything: the 101-point interpolation's ceiling, as in ultralytics), so the reference scores 1.0.
    Shifted boxes, lost or extra detections and reordered confidences all lower it. What the INT8
    fallback searches on, before the held-out labels confirm."""
    ev, own = DetectionEvaluator(), DetectionEvaluator()
    for i in range(len(ref)):
        r = ref[i:i + 1].astype(np.float32, copy=False)
        truth = decode_output(r, decoder=decoder, conf=conf, iou=iou)
        ev.add(decode_output(test[i:i + 1].astype(np.float32, copy=False), decoder=decoder, conf=0.001, iou=iou,
                             multi_label=True), truth.classes, truth.boxes)
        own.add(decode_output(r, decoder=decoder, conf=0.001, iou=iou, multi_label=True), truth.classes, truth.boxes)
    ceiling = own.result()["mAP50-95"]
    return float(min(ev.result()["mAP50-95"] / ceiling, 1.0)) if ceiling > 0 else 1.0
