"""YOLO pre- and post-processing without torch or ultralytics (numpy + OpenCV only).

Pre: `letterbox` is ultralytics' LetterBox to the pixel, `to_input` its float input to the bit (RGB, / 255);
`LetterboxInput` does both in one pass into reused buffers (the camera loop's path). Post: the decoder the
manifest names (edgekit.vision.decoders: YOLOv8/YOLO11, YOLOv5/v7, end-to-end, plug-ins), then boxes scaled
back to the source image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.lazy import lazy_import
from edgekit.vision.decoders import (Decoder, Detections, decode, decode_end2end, decode_yolo,  # noqa: F401 (re-exported)
                                     nms)

cv2 = lazy_import("cv2")  # imported on first use: `edgekit --help` and `info` work without OpenCV

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """Where the source image went inside the network input: scale per axis and top-left padding."""

    src_hw: tuple[int, int]
    dst_hw: tuple[int, int]
    gain_xy: tuple[float, float]
    pad_xy: tuple[int, int]


def letterbox_params(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Letterbox:
    h, w = src_hw
    r = min(dst_hw[0] / h, dst_hw[1] / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (dst_hw[1] - new_w) / 2, (dst_hw[0] - new_h) / 2
    return Letterbox((h, w), tuple(dst_hw), (new_w / w, new_h / h), (round(dw - 0.1), round(dh - 0.1)))


def letterbox(img: np.ndarray, dst_hw: tuple[int, int], out: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect, pad with 114 to dst_hw (uint8 HxWx3). `out` reuses a preallocated buffer."""
    lb = letterbox_params(img.shape[:2], dst_hw)
    new_w, new_h = round(lb.src_hw[1] * lb.gain_xy[0]), round(lb.src_hw[0] * lb.gain_xy[1])
    if out is None:
        out = np.empty((dst_hw[0], dst_hw[1], 3), np.uint8)
    elif out.shape != (dst_hw[0], dst_hw[1], 3) or out.dtype != np.uint8:
        raise EdgekitError(f"letterbox buffer must be uint8 {dst_hw[0]}x{dst_hw[1]}x3, got {out.dtype} {out.shape}")
    px, py = lb.pad_xy
    out[:py], out[py + new_h:], out[:, :px], out[:, px + new_w:] = PAD_VALUE, PAD_VALUE, PAD_VALUE, PAD_VALUE
    region = out[py:py + new_h, px:px + new_w]
    if (new_h, new_w) == img.shape[:2]:
        region[...] = img
    else:
        cv2.resize(img, (new_w, new_h), dst=region, interpolation=cv2.INTER_LINEAR)
    return out, lb


def to_input(img_bgr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Letterboxed uint8 BGR -> float32 (1, 3, H, W) RGB in [0, 1], as YOLO expects (divided by 255, as
    ultralytics does, so the floats are identical)."""
    h, w = img_bgr.shape[:2]
    if out is None:
        out = np.empty((1, 3, h, w), np.float32)
    planes = cv2.split(img_bgr)  # de-interleave once (SIMD); converting strided views is 3x slower
    for c in range(3):  # BGR -> RGB planes
        np.divide(planes[2 - c], _255, out=out[0, c], casting="unsafe")
    return out


_255 = np.float32(255)


class LetterboxInput:
    """Frame -> letterboxed float32 (1, 3, H, W) RGB / 255 in one pass, into buffers reused between calls:
    resize (when needed) into a cached uint8 buffer, de-interleave, divide straight into the image window of
    the input; the padding (114 / 255) is written only when the frame size changes. The same floats as
    `to_input(letterbox(img)[0])`. The returned array is overwritten by the next call."""

    def __init__(self, dst_hw: tuple[int, int]) -> None:
        self.dst_hw = (int(dst_hw[0]), int(dst_hw[1]))
        self.x = np.empty((1, 3, *self.dst_hw), np.float32)
        self._src_hw: tuple[int, int] | None = None
        self._lb: Letterbox | None = None

    def _setup(self, src_hw: tuple[int, int]) -> None:
        lb = letterbox_params(src_hw, self.dst_hw)
        self._new_hw = (round(src_hw[0] * lb.gain_xy[1]), round(src_hw[1] * lb.gain_xy[0]))
        self._resized = None if self._new_hw == src_hw else np.empty((*self._new_hw, 3), np.uint8)
        self._planes = [np.empty(self._new_hw, np.uint8) for _ in range(3)]
        self.x.fill(np.float32(PAD_VALUE) / _255)
        px, py = lb.pad_xy
        self._window = (slice(py, py + self._new_hw[0]), slice(px, px + self._new_hw[1]))
        self._src_hw, self._lb = src_hw, lb

    def __call__(self, img_bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        if img_bgr.ndim != 3 or img_bgr.shape[2] != 3 or img_bgr.dtype != np.uint8:
            raise EdgekitError(f"expected a uint8 HxWx3 BGR frame, got {img_bgr.dtype} {img_bgr.shape}")
        if img_bgr.shape[:2] != self._src_hw:
            self._setup(img_bgr.shape[:2])
        src = img_bgr
        if self._resized is not None:
            src = cv2.resize(img_bgr, self._new_hw[::-1], dst=self._resized, interpolation=cv2.INTER_LINEAR)
        cv2.split(src, self._planes)
        ys, xs = self._window
        for c in range(3):
            np.divide(self._planes[2 - c], _255, out=self.x[0, c, ys, xs], casting="unsafe")
        return self.x, self._lb


def decode_output(pred: np.ndarray, *, decoder: str | Decoder = "yolov8", conf: float = 0.25, iou: float = 0.45,
                  max_det: int = 300, agnostic: bool = False, multi_label: bool = False) -> Detections:
    """The model's output decoded by `decoder` (the manifest's `postprocess.decoder`, or a resolved plug-in):
    never a layout guessed from the shape, which can be wrong ((1, N, 6) is a one-class YOLOv5 head or an NMS'd
    graph)."""
    return decode(pred, decoder, conf=conf, iou=iou, max_det=max_det, agnostic=agnostic, multi_label=multi_label)


def postprocess(pred: np.ndarray, lb: Letterbox, *, decoder: str | Decoder = "yolov8", conf: float = 0.25,
                iou: float = 0.45, max_det: int = 300, agnostic: bool = False) -> Detections:
    """Model output -> detections in source-image pixels (decode, NMS when the layout needs it, undo the
    letterbox). `decoder`: the manifest's (`manifest.postprocess.decoder`) or a resolved plug-in."""
    return scale_to_source(decode_output(pred, decoder=decoder, conf=conf, iou=iou, max_det=max_det,
                                         agnostic=agnostic), lb)


def scale_to_source(det: Detections, lb: Letterbox) -> Detections:
    """Network-input pixels -> source-image pixels (undo the letterbox), clipped to the image."""
    b = det.boxes.copy()
    b[:, [0, 2]] = (b[:, [0, 2]] - lb.pad_xy[0]) / lb.gain_xy[0]
    b[:, [1, 3]] = (b[:, [1, 3]] - lb.pad_xy[1]) / lb.gain_xy[1]
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, lb.src_hw[1])
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, lb.src_hw[0])
    return Detections(b, det.scores, det.classes)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (len(a), len(b))."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)  # exact: equal boxes give 1.0


