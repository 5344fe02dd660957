"""One frame through the models: YOLO detect -> crop -> classify the crops (batched when the classifier
takes a batch) -> objects. Either model alone works too. numpy/OpenCV and the runners only: no torch."""
from __future__ import annotations

import queue
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.lazy import lazy_import
from edgekit.profile.timer import Timer
from edgekit.runners.base import Runner, feed_batch
from edgekit.vision import detect as yolo
from edgekit.manifest import InputSpec, Postprocess
from edgekit.vision.decoders import resolve_decoder
from edgekit.vision.preprocess import preprocess_classify, resize_crop, to_bgr

cv2 = lazy_import("cv2")  # imported on first use: `edgekit --help` and `info` work without OpenCV


CROP_PAD = 0.1  # added to each side of a detection box, as a fraction of its longer side: a little context


def crop_box(frame: np.ndarray, box: list[float], pad: float = CROP_PAD) -> np.ndarray:
    """The part of the frame a detection's classifier sees (a view, not a copy): the square around the box's
    centre whose side is the box's longer side plus `pad` of it on each side, moved inside the frame where it
    fits and clipped where it does not. Square, so the classifier's square input (resize the shorter side,
    centre-crop) sees a tall or wide object whole and undistorted. Training crops use this too."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * pad)
    sw, sh = min(side, w), min(side, h)
    left = min(max((x1 + x2 - sw) / 2, 0.0), w - sw)
    top = min(max((y1 + y2 - sh) / 2, 0.0), h - sh)
    xa, ya = int(left), int(top)
    xb, yb = min(w, int(np.ceil(left + sw))), min(h, int(np.ceil(top + sh)))
    if xb <= xa or yb <= ya:
        return frame[0:1, 0:1]
    return frame[ya:yb, xa:xb]


class CropBatch:
    """Detection crops -> the classifier's float32 NCHW batch, into buffers reused between frames: each crop
    resized as preprocess_classify does, then the batch de-interleaved once and normalised one channel plane
    at a time (5 passes per crop become 2 per batch). The same floats as stacking preprocess_classify of each
    crop. The returned array is overwritten by the next call."""

    def __init__(self, spec: InputSpec, pad: float = CROP_PAD) -> None:
        self.spec, self.pad, self.hw = spec, pad, (int(spec.crop[0]), int(spec.crop[1]))
        self.mean = np.asarray(spec.mean, np.float32) / np.float32(spec.scale)  # as normalize() computes them
        self.inv_std = np.float32(spec.scale) / np.asarray(spec.std, np.float32)
        self.order = (2, 1, 0) if spec.color == "RGB" else (0, 1, 2)  # input channel c <- BGR plane order[c]
        self._reserve(4)

    def _reserve(self, n: int) -> None:
        h, w = self.hw
        self.u8 = np.empty((n, h, w, 3), np.uint8)
        self.planes = [np.empty((n * h, w), np.uint8) for _ in range(3)]
        self.x = np.empty((n, 3, h, w), np.float32)

    def __call__(self, frame: np.ndarray, boxes: list[list[float]]) -> np.ndarray:
        if self.spec.layout != "NCHW" or frame.dtype != np.uint8:  # the general path
            return np.stack([preprocess_classify(crop_box(frame, b, self.pad), self.spec) for b in boxes])
        n, (h, w) = len(boxes), self.hw
        if n > len(self.u8):
            self._reserve(max(n, 2 * len(self.u8)))
        for i, b in enumerate(boxes):
            self.u8[i] = resize_crop(to_bgr(crop_box(frame, b, self.pad)), self.spec.resize, self.spec.crop,
                                     self.spec.interpolation)
        planes = [p[:n * h] for p in self.planes]
        cv2.split(self.u8[:n].reshape(n * h, w, 3), planes)
        x = self.x[:n]
        for c, src in enumerate(self.order):
            np.subtract(planes[src].reshape(n, h, w), self.mean[c], out=x[:, c])  # == (u8.astype(f32) - mean)
            np.multiply(x[:, c], self.inv_std[c], out=x[:, c])
        return x


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Prepared:
    """One frame between the stages (Pipeline.prepare -> infer -> finish): the detector's input, held in one of
    the pipeline's input buffers until inference is done, then the detector's raw output and its time."""
    blob: np.ndarray | None = None
    letterbox: Any = None
    buffer: Any = None
    pred: np.ndarray | None = None
    det_infer_ns: int = 0
    det_infer_cpu_ns: int = 0  # CPU time of the calling thread in the detector's call


class Pipeline:
    """prepare (letterbox), infer (the detector) and finish (decode, crop, classify) may run on three threads, one
    frame each, in that order per frame (edgekit.camera.overlap): `buffers` input buffers let that many frames be
    between prepare and the end of infer at once. Calling the pipeline runs the three in turn.
    `conf`, `iou`, `max_det`, `decoder`: None / "" take the detector's manifest's (`postprocess`: what its
    export checks used); given, they override it. `self.postprocess` is what runs."""

    def __init__(self, detector: Runner | None = None, classifier: Runner | None = None, *,
                 conf: float | None = None, iou: float | None = None, max_det: int | None = None, decoder: str = "",
                 crop_pad: float = CROP_PAD, buffers: int = 1) -> None:
        if detector is None and classifier is None:
            raise EdgekitError("the camera loop needs a detector (--detector) and/or a classifier (--classifier)")
        self.detector, self.classifier = detector, classifier
        self.crop_pad = crop_pad
        self.postprocess: Postprocess | None = None
        if detector is not None:
            self._set_postprocess(detector.manifest, conf, iou, max_det, decoder)
            self.det_labels = list(detector.manifest.labels) if detector.manifest else []
            self.det_in, spec = next(iter(detector.inputs().items()))
            self.det_hw = (int(spec.shape[2]), int(spec.shape[3]))
            self._free: queue.Queue = queue.Queue()  # input buffers not holding a frame: one pass into each
            for _ in range(max(1, buffers)):
                self._free.put(yolo.LetterboxInput(self.det_hw))
            self.det_out = next(iter(detector.outputs()))
        if classifier is not None:
            if classifier.manifest is None:
                raise EdgekitError("the classifier needs its manifest (labels, preprocessing): pass its model directory")
            self.cls_spec = classifier.manifest.input
            self.cls_labels = list(classifier.manifest.labels)
            self.cls_in = next(iter(classifier.inputs()))
            self.cls_out = next(iter(classifier.outputs()))
            self._crops = CropBatch(self.cls_spec, crop_pad)

    def _set_postprocess(self, manifest, conf, iou, max_det, decoder: str) -> None:
        model = manifest.postprocess if manifest is not None and manifest.postprocess is not None else Postprocess()
        given = {k: v for k, v in (("conf", conf), ("iou", iou), ("max_det", max_det)) if v is not None}
        self.postprocess = replace(model, **given, decoder=decoder or model.decoder)
        self.conf, self.iou, self.max_det = self.postprocess.conf, self.postprocess.iou, self.postprocess.max_det
        self._decode = resolve_decoder(model.decoder, decoder, model_dir=getattr(manifest, "model_dir", None))

    def __call__(self, frame: np.ndarray, timer: Timer) -> list[dict[str, Any]]:
        """Objects in `frame`. self.infer_ns is the models' own inference time in this call (runner timing):
        det_infer_ns + cls_infer_ns."""
        p = self.infer(self.prepare(frame, timer), timer)
        objects = self.finish(frame, p, timer)
        self.det_infer_ns = p.det_infer_ns
        self.infer_ns = self.det_infer_ns + self.cls_infer_ns
        return objects

    def prepare(self, frame: np.ndarray, timer: Timer) -> Prepared:
        p = Prepared()
        if self.detector is not None:
            with timer("preprocess"):
                try:
                    p.buffer = self._free.get_nowait()
                except queue.Empty:  # the caller let more frames in flight than it asked buffers for
                    raise EdgekitError("internal: more frames in flight than Pipeline(buffers=...)") from None
                p.blob, p.letterbox = p.buffer(frame)
        return p

    def infer(self, p: Prepared, timer: Timer) -> Prepared:
        if self.detector is not None:
            try:
                with timer("detect"):
                    p.pred = self.detector.infer({self.det_in: p.blob})[self.det_out]
                    p.det_infer_ns, p.det_infer_cpu_ns = self.detector.last_infer_ns, self.detector.last_infer_cpu_ns
            finally:  # the buffer is free again once the runner has read it (outputs are the runner's copies)
                self.release(p)
        return p

    def release(self, p: Prepared) -> None:
        """Give the frame's input buffer back (after infer, or for a frame dropped before it)."""
        if p.buffer is not None:
            self._free.put(p.buffer)
            p.blob = p.buffer = None

    def finish(self, frame: np.ndarray, p: Prepared, timer: Timer) -> list[dict[str, Any]]:
        """Decoded objects, classified; self.cls_infer_ns is the classifier's own time in this call."""
        self.cls_infer_ns = self.cls_infer_cpu_ns = 0
        if self.detector is None:  # classify the whole frame
            h, w = frame.shape[:2]
            objects = [{"box": [0.0, 0.0, float(w), float(h)], "det_class": "frame", "det_id": 0, "det_score": 1.0}]
        else:
            objects = self._decode_objects(p, timer)
        if self.classifier is not None and objects:
            self._classify(frame, objects, timer)
        return objects

    def _decode_objects(self, p: Prepared, timer: Timer) -> list[dict[str, Any]]:
        with timer("postprocess"):
            det = yolo.postprocess(p.pred, p.letterbox, decoder=self._decode, conf=self.conf, iou=self.iou,
                                   max_det=self.max_det)
            names = self.det_labels  # .tolist(): one conversion per array, not one numpy scalar per number
            return [{"box": [round(v, 1) for v in b], "det_id": c,
                     "det_class": names[c] if c < len(names) else str(c), "det_score": round(s, 4)}
                    for b, s, c in zip(det.boxes.tolist(), det.scores.tolist(), det.classes.tolist())]

    def _classify(self, frame: np.ndarray, objects: list[dict[str, Any]], timer: Timer) -> None:
        with timer("classify_pre"):
            crops = self._crops(frame, [o["box"] for o in objects])
        with timer("classify"):
            # every crop in one call where the classifier takes a batch (a dynamic-batch engine: up to its
            # profile's maximum per call), else one call per crop
            step = feed_batch(self.classifier, self.cls_in, largest=len(crops))
            out, self.cls_infer_ns, self.cls_infer_cpu_ns = [], 0, 0
            for i in range(0, len(crops), step):
                out.append(self.classifier.infer({self.cls_in: crops[i:i + step]})[self.cls_out])
                self.cls_infer_ns += self.classifier.last_infer_ns
                self.cls_infer_cpu_ns += self.classifier.last_infer_cpu_ns
            logits = out[0] if len(out) == 1 else np.concatenate(out)
        probs = self.last_probs = _softmax(logits.astype(np.float32))  # kept: the Python API's top-k reads it
        best = probs.argmax(axis=1)
        for o, k, p in zip(objects, best.tolist(), probs[np.arange(len(best)), best].tolist()):
            o.update(label_id=k, label=self.cls_labels[k] if k < len(self.cls_labels) else str(k),
                     label_score=round(p, 4))
