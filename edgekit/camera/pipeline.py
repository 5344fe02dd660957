"""One frame through the models: YOLO detect -> crop -> classify the crops (batched when the classifier
takes a batch) -> objects. Either model alone works too. numpy/OpenCV and the runners only: no torch."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.profile.timer import Timer
from edgekit.runners.base import Runner
from edgekit.vision import detect as yolo
from edgekit.vision.preprocess import preprocess_classify


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Pipeline:
    def __init__(self, detector: Runner | None = None, classifier: Runner | None = None, *, conf: float = 0.25,
                 iou: float = 0.45, max_det: int = 100, crop_pad: float = 0.1) -> None:
        if detector is None and classifier is None:
            raise EdgekitError("the camera loop needs a detector (--detector) and/or a classifier (--classifier)")
        self.detector, self.classifier = detector, classifier
        self.conf, self.iou, self.max_det, self.crop_pad = conf, iou, max_det, crop_pad
        if detector is not None:
            self.det_labels = list(detector.manifest.labels) if detector.manifest else []
            self.det_in, spec = next(iter(detector.inputs().items()))
            self.det_hw = (int(spec.shape[2]), int(spec.shape[3]))
            self._prep = yolo.LetterboxInput(self.det_hw)  # one pass into buffers reused every frame
            self.det_out = next(iter(detector.outputs()))
        if classifier is not None:
            if classifier.manifest is None:
                raise EdgekitError("the classifier needs its manifest (labels, preprocessing): pass its model directory")
            self.cls_spec = classifier.manifest.input
            self.cls_labels = list(classifier.manifest.labels)
            self.cls_in = next(iter(classifier.inputs()))
            self.cls_out = next(iter(classifier.outputs()))
            self.cls_batched = isinstance(classifier.inputs()[self.cls_in].shape[0], str)

    def __call__(self, frame: np.ndarray, timer: Timer) -> list[dict[str, Any]]:
        """Objects in `frame`. self.infer_ns is the models' own inference time in this call (runner timing)."""
        self.infer_ns = 0
        if self.detector is None:  # classify the whole frame
            h, w = frame.shape[:2]
            objects = [{"box": [0.0, 0.0, float(w), float(h)], "det_class": "frame", "det_id": 0, "det_score": 1.0}]
        else:
            objects = self._detect(frame, timer)
        if self.classifier is not None and objects:
            self._classify(frame, objects, timer)
        return objects

    def _detect(self, frame: np.ndarray, timer: Timer) -> list[dict[str, Any]]:
        with timer("preprocess"):
            blob, lb = self._prep(frame)
        with timer("detect"):
            pred = self.detector.infer({self.det_in: blob})[self.det_out]
            self.infer_ns += self.detector.last_infer_ns
        with timer("postprocess"):
            det = yolo.postprocess(pred, lb, conf=self.conf, iou=self.iou, max_det=self.max_det)
            names = self.det_labels
            return [{"box": [round(float(v), 1) for v in b], "det_id": int(c),
                     "det_class": names[c] if c < len(names) else str(int(c)), "det_score": round(float(s), 4)}
                    for b, s, c in zip(det.boxes, det.scores, det.classes)]

    def _classify(self, frame: np.ndarray, objects: list[dict[str, Any]], timer: Timer) -> None:
        with timer("classify_pre"):
            crops = [preprocess_classify(self._crop(frame, o["box"]), self.cls_spec) for o in objects]
        with timer("classify"):
            if self.cls_batched:
                logits = self.classifier.infer({self.cls_in: np.stack(crops)})[self.cls_out]
                self.infer_ns += self.classifier.last_infer_ns
            else:
                out = []
                for c in crops:
                    out.append(self.classifier.infer({self.cls_in: c[None]})[self.cls_out])
                    self.infer_ns += self.classifier.last_infer_ns
                logits = np.concatenate(out)
        probs = _softmax(logits.astype(np.float32))
        for o, p in zip(objects, probs):
            k = int(p.argmax())
            o.update(label_id=k, label=self.cls_labels[k] if k < len(self.cls_labels) else str(k),
                     label_score=round(float(p[k]), 4))

    def _crop(self, frame: np.ndarray, box: list[float]) -> np.ndarray:
        h, w = frame.shape[:2]
        x1, y1, x2, y2 = box
        px, py = (x2 - x1) * self.crop_pad, (y2 - y1) * self.crop_pad
        x1, y1 = max(0, int(x1 - px)), max(0, int(y1 - py))
        x2, y2 = min(w, int(np.ceil(x2 + px))), min(h, int(np.ceil(y2 + py)))
        if x2 <= x1 or y2 <= y1:
            return frame[0:1, 0:1]
        return frame[y1:y2, x1:x2]
