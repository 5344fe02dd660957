"""INT8 calibration for weakly typed TensorRT builds, without TensorRT: the batches are real training images
(never held-out ones) through the manifest's own preprocessing, the same images the ONNX INT8 export
calibrates on, in contiguous float32 batches of the right shape; what they depend on is fingerprinted."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.data.imagefolder import read_image
from edgekit.errors import EdgekitError
from edgekit.export.calibrator_trt import CalibrationBatches, calibration_batches_for, calibration_cache_path
from edgekit.manifest import Manifest
from edgekit.vision.preprocess import batch_classify


@pytest.fixture
def digits_manifest(digits_imagefolder) -> Manifest:
    from conftest import CLASSES, tiny_input_spec
    from edgekit.manifest import TensorSpec

    return Manifest(name="digits", task="classify", labels=list(CLASSES), input=tiny_input_spec(),
                    outputs=[TensorSpec("logits", [1, 3])],
                    source={"dataset": {"root": str(digits_imagefolder), "val_split": 0.1, "seed": 0}})


def test_calibration_batches_are_real_training_images_preprocessed_by_the_manifest(digits_manifest,
                                                                                 digits_imagefolder):
    batches = calibration_batches_for(digits_manifest, batch_size=4, images=12)
    assert len(batches) == 3 and batches.shape == (4, 3, 32, 32)
    assert all(p.is_relative_to(digits_imagefolder / "train") for p in batches.paths)  # never held-out images
    assert sorted(p.parent.name for p in batches.paths) == ["0"] * 4 + ["1"] * 4 + ["2"] * 4  # every class
    got = list(batches)
    for i, x in enumerate(got):
        assert x.dtype == np.float32 and x.shape == (4, 3, 32, 32) and x.flags.c_contiguous
        want = batch_classify([read_image(p) for p in batches.paths[4 * i:4 * i + 4]], digits_manifest.input)
        np.testing.assert_array_equal(x, want)
    assert len({x.tobytes() for x in got}) == 3


def test_calibration_uses_the_same_images_as_the_onnx_int8_export(digits_manifest, digits_imagefolder):
    from edgekit.tasks.classify import split_train, train_split

    train, root = train_split(digits_manifest)
    calib, _ = split_train(digits_manifest, train, root, 12, 1, seed=0)
    batches = calibration_batches_for(digits_manifest, batch_size=4, images=12, seed=0)
    assert [str(p.relative_to(root)) for p in batches.paths] == calib.paths
    np.testing.assert_array_equal(np.concatenate(list(batches)), calib.x)


def test_calibration_drops_a_partial_batch_and_fingerprints_what_it_used(digits_manifest, tmp_path):
    b = calibration_batches_for(digits_manifest, batch_size=4, images=10)
    assert len(b.paths) == 8 and len(list(b)) == 2
    same = calibration_batches_for(digits_manifest, batch_size=4, images=10)
    assert b.fingerprint() == same.fingerprint()
    assert b.fingerprint() != calibration_batches_for(digits_manifest, batch_size=2, images=8).fingerprint()
    assert b.fingerprint() != calibration_batches_for(digits_manifest, batch_size=4, images=12).fingerprint()
    cache = calibration_cache_path(tmp_path, b, "ab" * 32)
    assert cache.name == f"calib_{'ab' * 6}_{b.fingerprint()}.cache"


def test_calibration_errors_say_what_to_pass(digits_manifest, tmp_path):
    with pytest.raises(EdgekitError, match="at least one batch of 16 images, got 12"):
        calibration_batches_for(digits_manifest, batch_size=16, images=12)
    with pytest.raises(EdgekitError, match="at least 1"):
        CalibrationBatches([], digits_manifest, 0)
    digits_manifest.source["dataset"]["root"] = str(tmp_path / "gone")
    with pytest.raises(EdgekitError, match="--data DIR"):
        calibration_batches_for(digits_manifest, batch_size=4)


# ---- the calibrator's get_batch: an error is kept and fails the build --------------------------------
class DeviceMemory:
    """The CUDA adapter's calls the calibrator makes, on host memory: a batch 'uploaded' is copied."""

    def __init__(self) -> None:
        self.uploaded: list[np.ndarray] = []
        self.freed = False

    def stream_create(self):
        return "stream"

    def device_alloc(self, nbytes):
        return 0xD0

    def htod_async(self, dptr, x, stream):
        self.uploaded.append(x.copy())

    def stream_sync(self, stream):
        pass

    def device_free(self, dptr):
        self.freed = True

    def stream_destroy(self, stream):
        pass


class FakeTensorrt:
    class IInt8EntropyCalibrator2:  # the base class TensorRT's bindings provide: nothing to inherit here
        def __init__(self) -> None:
            pass


def _calibrator(batches, tmp_path):
    from edgekit.export.calibrator_trt import make_entropy_calibrator

    api = DeviceMemory()
    return make_entropy_calibrator(FakeTensorrt, api, batches, tmp_path / "calib.cache"), api


def test_calibrator_feeds_every_batch_then_ends(digits_manifest, tmp_path):
    batches = calibration_batches_for(digits_manifest, batch_size=4, images=12)
    cal, api = _calibrator(batches, tmp_path)
    got = [cal.get_batch(["input"]) for _ in range(4)]
    assert got == [[0xD0]] * 3 + [None] and cal.seen == 12
    np.testing.assert_array_equal(np.concatenate(api.uploaded), np.concatenate(list(batches)))
    cal.raise_if_failed()  # nothing went wrong
    cal.close()
    assert api.freed


def test_an_error_inside_get_batch_fails_the_build_with_the_real_error(digits_manifest, tmp_path):
    """TensorRT swallows exceptions raised in get_batch and builds from the batches it got: here the third
    image of the second batch became unreadable during calibration."""
    import shutil

    from edgekit.export.calibrator_trt import CalibrationBatches, CalibrationFeed

    paths = [Path(shutil.copy(p, tmp_path / f"{i}.png")) for i, p in
             enumerate(calibration_batches_for(digits_manifest, batch_size=4, images=12).paths)]
    batches = CalibrationBatches(paths, digits_manifest, 4)
    paths[6].write_bytes(b"not an image any more")
    cal, api = _calibrator(batches, tmp_path)
    assert cal.get_batch(["input"]) == [0xD0]
    assert cal.get_batch(["input"]) is None  # what TensorRT sees: the end of the data, not an exception
    assert cal.get_batch(["input"]) is None and cal.seen == 4
    with pytest.raises(EdgekitError, match=r"INT8 calibration failed after 4 images, so nothing was built: "
                                           r"calibration image .* is unreadable now"):
        cal.raise_if_failed()

    class Broken:
        nbytes = batches.nbytes

        def __iter__(self):
            yield np.zeros(batches.shape, np.float32)
            raise MemoryError("cannot allocate")

    feed = CalibrationFeed(DeviceMemory(), Broken())
    assert feed.next_batch() == [0xD0] and feed.next_batch() is None
    with pytest.raises(EdgekitError, match="after 4 images, so nothing was built: MemoryError: cannot allocate"):
        feed.raise_if_failed()


# ---- a detector: the task's letterboxed training images, the ones the ONNX INT8 export calibrates on ----------
def test_detector_calibration_batches_are_letterboxed_training_images(tiny_yolo_dir, tiny_yolo_wide_data):
    """`edgekit export DETECTOR --to trt --precision int8` (weak typing) calibrated on classifier inputs: the
    ImageFolder train split (no such thing: an error after the ONNX work) through resize + crop."""
    from edgekit.data.yolo import detection_train_split
    from edgekit.vision.detect import LetterboxInput

    m = Manifest.load(tiny_yolo_dir)
    batches = calibration_batches_for(m, batch_size=2, images=4, seed=1, dataset=tiny_yolo_wide_data)
    root = tiny_yolo_wide_data.parent.resolve()
    assert batches.shape == (2, 3, 64, 64) and len(batches) == 2 and Path(batches.root) == root
    assert all(p.resolve().parent == root / "images" / "train" for p in batches.paths)  # never held-out images
    got = np.concatenate(list(batches))
    images = [read_image(p) for p in batches.paths]
    assert all(img.shape[0] < img.shape[1] for img in images)  # wide: letterboxing pads them
    lb = LetterboxInput((64, 64))
    np.testing.assert_array_equal(got, np.concatenate([lb(img)[0].copy() for img in images]))
    assert not np.allclose(got, batch_classify(images, m.input), atol=0.05)  # not a classifier's resize + crop
    calib, _ = detection_train_split(m, tiny_yolo_wide_data, n=4, minimum=1, seed=1, n_tune=0)
    assert [p.name for p in batches.paths] == [Path(p).name for p in calib.paths]  # the ONNX INT8 export's images
    np.testing.assert_array_equal(got, calib.x)
    fingerprint = batches.fingerprint()
    assert calibration_batches_for(m, batch_size=2, images=4, seed=1,
                                   dataset=tiny_yolo_wide_data).fingerprint() == fingerprint
    m.input.shape = [1, 3, 64, 96]  # another letterbox size: other inputs, another calibration table
    assert calibration_batches_for(m, batch_size=2, images=4, seed=1,
                                   dataset=tiny_yolo_wide_data).fingerprint() != fingerprint
