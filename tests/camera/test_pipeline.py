"""The pipeline's batched crop preprocessing gives the classifier the very floats of the per-crop reference
(preprocess_classify of crop_box), for any number of detections, odd boxes and both colour orders."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgekit.camera.pipeline import CropBatch, crop_box
from edgekit.manifest import InputSpec
from edgekit.vision.preprocess import preprocess_classify


def _spec(color: str = "RGB", layout: str = "NCHW") -> InputSpec:
    shape = [1, 3, 64, 64] if layout == "NCHW" else [1, 64, 64, 3]
    return InputSpec(name="input", shape=shape, dtype="float32", layout=layout, color=color, resize=73,
                     crop=[64, 64], mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def _boxes(rng, n: int, w: int = 640, h: int = 480) -> list[list[float]]:
    out = []
    for _ in range(n):
        x1, y1 = rng.uniform(-20, w - 5), rng.uniform(-20, h - 5)
        out.append([round(float(v), 1) for v in (x1, y1, x1 + rng.uniform(1, 200), y1 + rng.uniform(1, 150))])
    out += [[10.0, 10.0, 10.0, 10.0], [600.0, 400.0, 700.0, 500.0], [0.0, 0.0, 640.0, 480.0]]  # empty, edge, all
    return out


@pytest.mark.parametrize("color,layout", [("RGB", "NCHW"), ("BGR", "NCHW"), ("RGB", "NHWC")])
def test_crop_batch_matches_per_crop_preprocessing(color, layout):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 640, 3), np.uint8)
    spec = _spec(color, layout)
    batch = CropBatch(spec, pad=0.1)
    for n in (1, 3, 9, 2):  # grows past its first capacity, then reuses the buffers for fewer
        boxes = _boxes(rng, n)
        want = np.stack([preprocess_classify(crop_box(frame, b, 0.1), spec) for b in boxes])
        got = batch(frame, boxes)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        assert got.flags.c_contiguous and all(got[i:i + 1].flags.c_contiguous for i in range(len(got)))


def test_crop_batch_general_path_for_non_uint8_frames():
    rng = np.random.default_rng(1)
    frame = rng.random((120, 160, 3)).astype(np.float32) * 255
    spec = dataclasses.replace(_spec(), resize=36, crop=[32, 32], shape=[1, 3, 32, 32])
    boxes = _boxes(rng, 2, 160, 120)
    want = np.stack([preprocess_classify(crop_box(frame, b), spec) for b in boxes])
    np.testing.assert_array_equal(CropBatch(spec)(frame, boxes), want)


def test_classifier_takes_all_crops_in_calls_no_larger_than_it_accepts(torch_model_copy, monkeypatch):
    """A dynamic-batch classifier gets a frame's crops in one call, or, where the runner accepts fewer (a
    TensorRT engine's profile maximum), in calls of at most that many: the same labels and scores either way,
    and the classifier's time is the sum of its calls."""
    from edgekit.camera.pipeline import Pipeline
    from edgekit.export.onnx import OnnxExportConfig, onnx_from_torch
    from edgekit.profile.timer import Timer
    from edgekit.runners import load_runner

    onnx_from_torch(torch_model_copy, OnnxExportConfig(dynamic_batch=True, parity_images=8))
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (240, 320, 3), np.uint8)
    boxes = [[float(x), float(y), float(x + 40), float(y + 44)] for x, y in rng.integers(0, 200, (7, 2))]
    with load_runner(torch_model_copy, "onnxrt", threads=1) as cls:
        pipe = Pipeline(None, cls)
        sizes: list[int] = []
        took: list[int] = []
        real_infer = cls.infer

        def infer(feed):
            sizes.append(len(next(iter(feed.values()))))
            out = real_infer(feed)
            took.append(cls.last_infer_ns)
            return out

        monkeypatch.setattr(cls, "infer", infer)
        whole = [{"box": b} for b in boxes]
        pipe._classify(frame, whole, Timer())
        assert sizes == [7] and pipe.cls_infer_ns == cls.last_infer_ns > 0
        monkeypatch.setattr(cls, "max_batch", lambda name: 3)
        sizes.clear(), took.clear()
        chunked = [{"box": b} for b in boxes]
        pipe._classify(frame, chunked, Timer())
        assert sizes == [3, 3, 1] and pipe.cls_infer_ns == sum(took)
    assert [o["label"] for o in chunked] == [o["label"] for o in whole]
    np.testing.assert_allclose([o["label_score"] for o in chunked], [o["label_score"] for o in whole], atol=1e-4)
