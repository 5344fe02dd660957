"""Image -> model input, exactly as the manifest's input spec says. numpy, OpenCV and Pillow only (no torch),
so training, export checks and every runner share one definition."""
from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.lazy import lazy_import
from edgekit.manifest import InputSpec

cv2 = lazy_import("cv2")  # imported on first use: `edgekit --help` and `info` work without OpenCV
PIL_Image = lazy_import("PIL.Image")  # only for the pil_* interpolations


def to_bgr(img: np.ndarray) -> np.ndarray:
    """Any uint8 image (gray, BGR, BGRA) as 3-channel BGR."""
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    raise EdgekitError(f"unsupported image shape {img.shape}: expected HxW, HxWx1, HxWx3 or HxWx4")


def resize_crop(img: np.ndarray, resize: int, crop: tuple[int, int] | list[int], interpolation: str = "area"
                ) -> np.ndarray:
    """Resize the shorter side to `resize`, then take the centre `crop` (H, W). `interpolation` is the
    manifest's (edgekit.manifest.INTERPOLATIONS): "area" is OpenCV's, "pil_*" torchvision's on PIL images."""
    if interpolation != "area":
        return _pil_resize_crop(img, resize, crop, interpolation)
    h, w = img.shape[:2]
    s = resize / min(h, w)
    nh, nw = max(crop[0], round(h * s)), max(crop[1], round(w * s))
    if (nh, nw) != (h, w):
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (nw, nh), interpolation=interp)
    top, left = (nh - crop[0]) // 2, (nw - crop[1]) // 2
    return img[top:top + crop[0], left:left + crop[1]]


def _pil_resize_crop(img: np.ndarray, resize: int, crop: tuple[int, int] | list[int], interpolation: str
                     ) -> np.ndarray:
    """torchvision's Resize(resize) then CenterCrop(crop) on a PIL image, to the pixel: its output size (the
    long side truncated, not rounded), Pillow's antialiased filter (it rounds to uint8 between its horizontal
    and vertical passes, which a float implementation would not) and its crop offset (rounded, not floored)."""
    if interpolation not in _PIL_FILTERS:
        raise EdgekitError(f"unknown interpolation '{interpolation}': use area, pil_bilinear or pil_bicubic")
    h, w = img.shape[:2]
    nh, nw = (int(resize * h / w), resize) if w <= h else (resize, int(resize * w / h))
    nh, nw = max(nh, crop[0]), max(nw, crop[1])
    if (nh, nw) != (h, w):
        resample = getattr(PIL_Image.Resampling, _PIL_FILTERS[interpolation])
        img = np.asarray(PIL_Image.fromarray(np.ascontiguousarray(img)).resize((nw, nh), resample))
    top, left = int(round((nh - crop[0]) / 2.0)), int(round((nw - crop[1]) / 2.0))
    return img[top:top + crop[0], left:left + crop[1]]


_PIL_FILTERS = {"pil_bilinear": "BILINEAR", "pil_bicubic": "BICUBIC"}


def normalize(img_bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 HxWx3 BGR -> float32 CHW (or HWC) in the spec's colour order, scaled and normalised."""
    img = img_bgr[:, :, ::-1] if spec.color == "RGB" else img_bgr
    mean = np.asarray(spec.mean, np.float32) / np.float32(spec.scale)
    inv_std = np.float32(spec.scale) / np.asarray(spec.std, np.float32)
    x = (img.astype(np.float32) - mean) * inv_std  # == (img * scale - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1) if spec.layout == "NCHW" else x)


def preprocess_classify(img: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One decoded image (any channel count) -> one model input without the batch axis."""
    return normalize(resize_crop(to_bgr(img), spec.resize, spec.crop, spec.interpolation), spec)


def batch_classify(images: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    if not images:
        raise EdgekitError("no images to preprocess")
    return np.stack([preprocess_classify(im, spec) for im in images])
