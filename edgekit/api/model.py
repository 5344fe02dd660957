"""`edgekit.load(model_dir)`: a model directory on any backend and precision, called on images.

    with edgekit.load("models/trained/digit_detector", backend="onnxrt") as model:
        for det in model("street.jpg"):
            print(det.det_class, det.det_score, det.box)

The pre- and post-processing are the camera loop's own (camera.pipeline.Pipeline: the manifest's letterbox or
resize/crop and normalisation, YOLO decode + NMS, softmax), run through the same runner, so an image gives the
objects `edgekit camera` writes for it. OpenCV and the backend are imported when a model loads, not before."""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.api.results import Classification, Detections, classification_from_probs, detections_from_objects
from edgekit.camera.loop import open_runner
from edgekit.camera.pipeline import Pipeline
from edgekit.data.imagefolder import decode_image
from edgekit.errors import EdgekitError
from edgekit.manifest import MANIFEST_NAME, Manifest
from edgekit.profile.timer import Timer
from edgekit.vision.preprocess import to_bgr

IMAGE_HINT = "pass a uint8 BGR image (H x W x 3, as cv2.imread gives), a list of them, or an image file's path"


def load(model_dir: str | Path, backend: str = "onnxrt", precision: str | None = None, device: str | None = None, *,
         conf: float | None = None, iou: float | None = None, max_det: int | None = None, decoder: str = "",
         top_k: int = 5, threads: int = 0) -> "Model":
    """Load the model directory's `backend` artifact (fp32 first when precision is None; device: the backend's
    default when None). Detectors return `Detections` (conf, iou, max_det: None takes what `edgekit camera`
    takes without --conf/--iou/--max-det), classifiers a `Classification` with the `top_k` best labels. Close
    it, or use `with`."""
    return Model(model_dir, backend, precision, device, conf=conf, iou=iou, max_det=max_det, decoder=decoder,
                 top_k=top_k, threads=threads)


class Model:
    """A loaded model: call it on one image (an array or a path) for one result, on a list or an (N, H, W, 3)
    array for a list. A batch runs image by image through the same path, so batch and single results are equal."""

    def __init__(self, model_dir: str | Path, backend: str = "onnxrt", precision: str | None = None,
                 device: str | None = None, *, conf: float | None = None, iou: float | None = None,
                 max_det: int | None = None, decoder: str = "", top_k: int = 5, threads: int = 0) -> None:
        self.manifest = read_manifest(model_dir)
        if not isinstance(top_k, int) or top_k < 1:
            raise EdgekitError(f"top_k must be a positive integer, got {top_k!r}")
        self.task, self.top_k = self.manifest.task, top_k
        # the post-processing options given; the others are the camera loop's own defaults, whatever they are
        self.post_options = {k: v for k, v in (("conf", conf), ("iou", iou), ("max_det", max_det)) if v is not None}
        _check_thresholds(**self.post_options)
        if decoder:  # camera --decoder: the detector's output decoder, where this edgekit has a choice of them
            if "decoder" not in inspect.signature(Pipeline).parameters:
                raise EdgekitError("this edgekit has one detector decoder: load() without decoder=")
            self.post_options["decoder"] = decoder
        self.runner = open_runner(str(self.manifest.model_dir), backend, precision or "", device or "", threads)
        try:
            det, cls = (self.runner, None) if self.task == "detect" else (None, self.runner)
            self.pipeline = Pipeline(det, cls, **self.post_options)
        except BaseException:
            self.runner.close()
            raise
        # what runs (None for a classifier)
        self.conf, self.iou, self.max_det = (getattr(self.pipeline, k, None) for k in ("conf", "iou", "max_det"))
        self.timer = Timer()  # per-stage times of every call (preprocess, detect/classify, postprocess)

    # ---- what it is ---------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def precision(self) -> str:
        """The precision of the artifact actually loaded."""
        return self.runner.precision

    def __repr__(self) -> str:
        state = "" if self.runner.loaded else ", closed"
        return (f"Model({self.name!r}, task={self.task!r}, backend={self.backend!r}, "
                f"precision={self.precision!r}{state})")

    # ---- calling ------------------------------------------------------------------------------------------
    def __call__(self, images: Any) -> Detections | Classification | list[Detections | Classification]:
        batch, single = as_images(images)
        results = [self._one(img) for img in batch]
        return results[0] if single else results

    def _one(self, img: np.ndarray) -> Detections | Classification:
        if not self.runner.loaded:
            raise EdgekitError(f"{self!r} is closed: load() the model again")
        objects = self.pipeline(img, self.timer)
        if self.task == "detect":
            return detections_from_objects(objects, img.shape[:2])
        return classification_from_probs(self.pipeline.last_probs[0], self.labels, self.top_k)

    # ---- lifetime -----------------------------------------------------------------------------------------
    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_manifest(model_dir: str | Path) -> Manifest:
    """The model directory's manifest; a model file, a missing path or a folder without a manifest is an error
    that says what to pass instead."""
    path = Path(model_dir)
    if path.is_file() and path.name != MANIFEST_NAME:
        beside = path.parent / MANIFEST_NAME
        fix = f"pass its folder {path.parent}" if beside.exists() else \
            "export it with edgekit first (edgekit export), which writes the directory with its manifest"
        raise EdgekitError(f"{path} is a file: edgekit.load() takes a model directory (with {MANIFEST_NAME}, which "
                           f"says how to pre- and post-process); {fix}")
    if not path.exists():
        raise EdgekitError(f"model directory {path} does not exist: pass the directory that holds {MANIFEST_NAME} "
                           "(edgekit train / export write it)")
    if path.is_dir() and not (path / MANIFEST_NAME).exists():
        raise EdgekitError(f"{path} is not a model directory (no {MANIFEST_NAME}): pass the directory edgekit train / "
                           "export wrote, which holds manifest.json and the model files")
    return Manifest.load(path)


def as_images(x: Any) -> tuple[list[np.ndarray], bool]:
    """(images as 3-channel BGR uint8, whether one image was passed)."""
    if isinstance(x, (str, Path)):
        return [_read(Path(x))], True
    if isinstance(x, np.ndarray):
        if x.ndim == 4:
            return [_image(im, f"image {i} of the batch") for i, im in enumerate(x)], False
        return [_image(x, "the image")], True
    if isinstance(x, Sequence) and not isinstance(x, (bytes, bytearray)):
        if not x:
            raise EdgekitError(f"an empty list of images: {IMAGE_HINT}")
        return [_read(Path(im)) if isinstance(im, (str, Path)) else _image(im, f"image {i} of the list")
                for i, im in enumerate(x)], False
    raise EdgekitError(f"cannot run a model on a {type(x).__name__}: {IMAGE_HINT}")


def _image(img: Any, what: str) -> np.ndarray:
    if not isinstance(img, np.ndarray):
        raise EdgekitError(f"{what} is a {type(img).__name__}, not an image: {IMAGE_HINT}")
    channels_ok = img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3, 4))
    if img.dtype != np.uint8 or not channels_ok or img.size == 0:
        fix = " (scale floats in [0, 1] with (x * 255).astype(np.uint8))" if img.dtype.kind == "f" else ""
        raise EdgekitError(f"{what} is a {img.dtype} array of shape {img.shape}, not an image: {IMAGE_HINT}{fix}")
    return to_bgr(img)


def _read(path: Path) -> np.ndarray:
    img, why = decode_image(path)
    if img is None:
        raise EdgekitError(f"cannot read the image {path} ({why}): {IMAGE_HINT}")
    return to_bgr(img)


def _check_thresholds(conf: float = 0.5, iou: float = 0.5, max_det: int = 1) -> None:
    """The ranges `edgekit camera` checks for --conf, --iou and --max-det."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not number(conf) or not 0 <= conf <= 1:
        raise EdgekitError(f"conf must be a number in [0, 1], got {conf!r}")
    if not number(iou) or not 0 < iou <= 1:
        raise EdgekitError(f"iou must be a number in (0, 1], got {iou!r}")
    if not isinstance(max_det, int) or isinstance(max_det, bool) or max_det < 1:
        raise EdgekitError(f"max_det must be a positive integer, got {max_det!r}")
