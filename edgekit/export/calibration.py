"""INT8 calibration: the calibration set (which images: the task's, edgekit.tasks) run through ONNX Runtime's
calibrator, and a cache so the same settings never calibrate twice.

The cache is ONNX Runtime's own JSON of tensor ranges (save_tensors_data / load_tensors_data), named by a
key over everything that changes the ranges: the FP32 model's sha256, whether it was pre-processed (and by
which ONNX Runtime), the method and its options, and the sha256 of the preprocessed calibration tensors
(which covers the image list, their pixels and the preprocessing)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
from pathlib import Path

import numpy as np

from edgekit.data.inputs import CalibrationSet
from edgekit.errors import EdgekitError, unknown_choice
from edgekit.fileio import atomic_write_json

log = logging.getLogger(__name__)
METHODS = ("minmax", "entropy", "percentile")
CACHE_DIR = "calibration"  # inside the model directory
CALIB_MEMORY_BYTES = 2 * 2**30  # activations ORT's calibrator may hold at once (see _chunk_images)


def calibration_options(method: str, *, percentile: float, symmetric: bool) -> dict:
    """ORT calibrator options for `method`: these (with the model and the inputs) decide the ranges."""
    if method not in METHODS:
        raise unknown_choice("calibration method", method, METHODS)
    if method == "minmax":
        return {"symmetric": symmetric}
    if method == "entropy":
        return {"symmetric": symmetric, "num_bins": 512, "num_quantized_bins": 128}
    if not 90.0 <= percentile < 100.0:
        raise EdgekitError(f"--percentile {percentile} is out of range: use a value in [90, 100), e.g. 99.999")
    # ONNX Runtime's percentile ranges are symmetric (|x| histogram) by default; measured on MobileNetV2 @64:
    # -0.2 points (98.8% agreement) vs 0.6 (98.6%) with asymmetric ranges, and equal on ResNet18.
    return {"symmetric": True, "num_bins": 2048, "percentile": percentile}


def ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def cache_key(model_sha256: str, preprocessed: bool, method: str, options: dict, inputs_sha256: str) -> dict:
    import onnxruntime

    return {"model_sha256": model_sha256, "quant_pre_process": preprocessed,
            "onnxruntime": onnxruntime.__version__ if preprocessed else None, "method": method,
            "options": options, "inputs_sha256": inputs_sha256}


def calibrate(model_path: Path, calib: CalibrationSet, key: dict, cache_dir: Path, *, input_name: str
              ) -> tuple[Path, dict]:
    """Tensor ranges of `model_path` over the calibration inputs, from the cache when the same key was
    calibrated before. Returns (cache file, info for the manifest: key, hit, seconds)."""
    from onnxruntime.quantization import save_tensors_data

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    cache = cache_dir / f"{key['method']}-{digest[:16]}.json"
    info = {"cache": str(cache.relative_to(cache_dir.parent)) if cache.is_relative_to(cache_dir.parent) else str(cache),
            "key_sha256": digest, "hit": cache.is_file()}
    if info["hit"]:
        log.info("calibration cache hit: %s (calibration skipped)", cache)
        return cache, info
    t0 = time.perf_counter()
    ranges = run_calibration(model_path, calib.x, key["method"], key["options"], input_name=input_name)
    save_tensors_data(ranges, cache)  # atomic (temp file + rename)
    atomic_write_json(cache.with_suffix(".key.json"), {**key, "images": calib.paths, "root": calib.root})
    info["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("calibrated %d tensors on %d images (%s) in %.1f s -> %s", len(ranges.data), len(calib),
             key["method"], info["seconds"], cache)
    return cache, info


def run_calibration(model_path: Path, x: np.ndarray, method: str, options: dict, *, input_name: str):
    """ORT's calibrator over every input in `x` (batch 1 unless the model's batch axis is dynamic)."""
    import tempfile

    from onnxruntime.quantization.calibrate import create_calibrator

    with tempfile.TemporaryDirectory(prefix="edgekit-calib-") as tmp:
        calibrator = create_calibrator(Path(model_path), quantizable_op_types(),
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=ort_method(method), extra_options=dict(options))
        batch = _batch_size(calibrator.infer_session, input_name, len(x))
        chunk = _chunk_images(calibrator.infer_session, x[:batch], input_name, len(x))
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
            for start in range(0, len(x), chunk):  # each call folds its chunk into the ranges / histograms
                part = x[start:start + chunk]
                full = len(part) // batch * batch  # one call's batches must all be one size: ORT stacks them
                for piece, size in ((part[:full], batch), (part[full:], len(part) - full)):
                    if len(piece):
                        calibrator.collect_data(_Reader(piece, input_name, size))
            return calibrator.compute_data()


def _chunk_images(session, first: np.ndarray, input_name: str, n: int) -> int:
    """How many images one collect_data call may take. ORT's calibrators hold every intermediate tensor of
    every image of a call in memory before reducing them (YOLOv8s at 320: ~170 MB per image, so 200 images
    ran this 24 GiB machine out of memory); calls fold into the ranges one after another. Models whose
    activations of all `n` images fit in CALIB_MEMORY_BYTES calibrate in one call, as before."""
    per_image = sum(o.nbytes for o in session.run(None, {input_name: first})) / max(len(first), 1)
    chunk = max(len(first), int(CALIB_MEMORY_BYTES // max(per_image, 1)) // len(first) * len(first))
    if chunk < n:
        log.info("calibrating in chunks of %d images (%.0f MB of activations per image)", chunk, per_image / 2**20)
    return min(chunk, n)


def quantizable_op_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over an array of preprocessed inputs."""

    def __init__(self, x: np.ndarray, name: str, batch: int) -> None:
        self.x, self.name, self.batch = x, name, batch
        self.start, self.end, self.i = 0, len(x), 0

    def get_next(self) -> dict | None:
        i = self.start + self.i * self.batch
        if i >= self.end:
            return None
        self.i += 1
        return {self.name: self.x[i:min(i + self.batch, self.end)]}

    def __len__(self) -> int:
        return len(self.x)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.i = start_index, end_index, 0


def _batch_size(session, name: str, n: int) -> int:
    dim = next(i.shape[0] for i in session.get_inputs() if i.name == name)
    return min(n, 32) if not isinstance(dim, int) else dim
