"""INT8 calibration for weakly typed TensorRT builds (TensorRT 10.x before 10.12): real training images
through the task's preprocessing (edgekit.tasks: a classifier's resize + crop, a detector's letterbox), in
fixed-size float32 batches.

`CalibrationBatches` is plain Python (numpy + OpenCV) and testable anywhere; the TensorRT
IInt8EntropyCalibrator2 subclass is a thin wrapper, defined only when TensorRT is imported."""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data.imagefolder import read_image
from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_bytes
from edgekit.manifest import Manifest
from edgekit.tasks import task_for

log = logging.getLogger(__name__)


class CalibrationBatches:
    """Contiguous float32 batches [batch, *sample_shape] from image files, preprocessed exactly as the model's
    task does it (task.inputs over the manifest's input spec). A last partial batch is dropped: TensorRT
    calibrates one fixed shape. `root`: the dataset they came from, for the manifest."""

    def __init__(self, paths: Sequence[str | Path], manifest: Manifest, batch_size: int, root: str = "") -> None:
        if batch_size < 1:
            raise EdgekitError(f"calibration batch must be at least 1, got {batch_size}")
        if len(paths) < batch_size:
            raise EdgekitError(f"INT8 calibration needs at least one batch of {batch_size} images, got {len(paths)}: "
                               "pass more training images (--calib-images, --data)")
        self.paths = [Path(p) for p in paths]
        self.manifest, self.task = manifest, task_for(manifest.task)  # preprocessing only: no decoder
        self.batch_size = batch_size
        self.root = root

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.manifest.input.shape[1:])

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.batch_size, *self.sample_shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 4

    def __len__(self) -> int:
        return len(self.paths) // self.batch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        for b in range(len(self)):
            chunk = self.paths[b * self.batch_size:(b + 1) * self.batch_size]
            images = []
            for p in chunk:
                img = read_image(p)
                if img is None:
                    raise EdgekitError(f"calibration image {p} is unreadable now; remove it and rebuild")
                images.append(img)
            x = np.ascontiguousarray(self.task.inputs(self.manifest, images), dtype=np.float32)
            if x.shape != self.shape:  # TensorRT would read past (or short of) the buffer: never feed it
                raise EdgekitError(f"the {self.task.name} preprocessing made a batch of shape {list(x.shape)}, the "
                                   f"calibration buffer is {list(self.shape)}: the manifest's input spec disagrees "
                                   "with its shape")
            yield x

    def fingerprint(self) -> str:
        """Changes when the images (their bytes), their order, the batch or the preprocessing change."""
        spec = self.manifest.input
        h = hashlib.sha256(repr((self.batch_size, *(getattr(spec, f) for f in self.task.input_fields))).encode())
        for p in self.paths:
            h.update(hashlib.sha256(p.read_bytes()).digest())
        return h.hexdigest()[:16]


def calibration_batches_for(manifest: Manifest, *, batch_size: int, images: int = 200, seed: int = 0,
                            dataset: str | Path | None = None) -> CalibrationBatches:
    """The first `images` training images in the order the ONNX INT8 export takes them (the task's pick:
    edgekit.tasks, class round-robin for classifiers, a seeded permutation for detectors), so both INT8 paths
    calibrate on the same images, never on the held-out ones. Rounded down to whole batches of `batch_size`."""
    paths, root = task_for(manifest.task).calibration_paths(manifest, dataset, images, seed)
    if len(paths) < batch_size:
        raise EdgekitError(f"INT8 calibration needs at least one batch of {batch_size} images, got {len(paths)} "
                           f"from the train split of {root}: raise --calib-images or lower --calib-batch")
    n = len(paths) - len(paths) % batch_size
    if n < len(paths):
        log.info("INT8 calibration: %d of %d images (whole batches of %d)", n, len(paths), batch_size)
    log.info("INT8 calibration: %d training images from %s in batches of %d", n, root, batch_size)
    return CalibrationBatches(paths[:n], manifest, batch_size, str(root))


def calibration_cache_path(model_dir: Path, batches: CalibrationBatches, onnx_sha256: str) -> Path:
    """Named after what it depends on, so a stale table is never read back."""
    return model_dir / f"calib_{onnx_sha256[:12]}_{batches.fingerprint()}.cache"


class CalibrationFeed:
    """What the calibrator does, without TensorRT: one device buffer the size of a batch, filled batch by
    batch on its own stream. TensorRT calls get_batch from C++ and swallows an exception raised there: it
    ends calibration as if the images had run out and builds from what it saw. So every error is caught
    here, kept in `error`, and raise_if_failed() (called by the build) turns it into the build's error."""

    def __init__(self, api: Any, batches: CalibrationBatches) -> None:
        self.api, self.batches = api, batches
        self._batches = iter(batches)
        self._stream = api.stream_create()
        self._dptr = api.device_alloc(batches.nbytes)
        self.seen = 0
        self.error: Exception | None = None

    def next_batch(self) -> list[int] | None:
        """The device pointer of the next batch, or None at the end (or after an error: see `error`)."""
        if self.error is not None:
            return None
        try:
            x = next(self._batches, None)
            if x is None:
                return None
            self.api.htod_async(self._dptr, x, self._stream)
            self.api.stream_sync(self._stream)
        except Exception as e:  # anything: TensorRT would hide it and calibrate on a partial set
            self.error = e
            log.error("INT8 calibration failed after %d images: %s", self.seen, e)
            return None
        self.seen += len(x)
        return [self._dptr]

    def raise_if_failed(self) -> None:
        if self.error is None:
            return
        e = self.error
        detail = str(e) if isinstance(e, EdgekitError) else f"{type(e).__name__}: {e}"
        raise EdgekitError(f"INT8 calibration failed after {self.seen} images, so nothing was built: {detail}") from e

    def close(self) -> None:
        if self._dptr:
            self.api.device_free(self._dptr)
            self.api.stream_destroy(self._stream)
            self._dptr = 0


def make_entropy_calibrator(trt: Any, api: Any, batches: CalibrationBatches, cache: Path) -> Any:
    """A trt.IInt8EntropyCalibrator2 over `batches` (device memory from the CUDA adapter): a thin shell
    around CalibrationFeed. Call raise_if_failed() after the build, then close()."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.feed = CalibrationFeed(api, batches)

        @property
        def seen(self) -> int:
            return self.feed.seen

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch is in the calibration profile's shape

        def get_batch(self, names: list[str]) -> list[int] | None:
            return self.feed.next_batch()

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.exists() else None

        def write_calibration_cache(self, data: Any) -> None:
            atomic_write_bytes(cache, bytes(data))

        def raise_if_failed(self) -> None:
            self.feed.raise_if_failed()

        def close(self) -> None:
            self.feed.close()

    return EntropyCalibrator()
