"""INT8 calibration for weakly typed TensorRT builds, without TensorRT: the batches are real training images
(never held-out ones) through the manifest's own preprocessing, the same images the ONNX INT8 export
calibrates on, in contiguous float32 batches of the right shape; what they depend on is fingerprinted."""
from __future__ import annotations

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
    from edgekit.export.accuracy import train_split
    from edgekit.export.calibration import split_train

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
        CalibrationBatches([], digits_manifest.input, 0)
    digits_manifest.source["dataset"]["root"] = str(tmp_path / "gone")
    with pytest.raises(EdgekitError, match="--data DIR"):
        calibration_batches_for(digits_manifest, batch_size=4)
