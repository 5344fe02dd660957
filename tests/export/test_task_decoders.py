"""The export hooks (metric, agreement, parity) read a detector's outputs with the decoder its manifest names:
a graph ending in NMS is scored as (1, K, 6) rows, not as a raw head; a plug-in recorded in the manifest is
used only when the user names it."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.tasks import task_for
from edgekit.manifest import InputSpec, Manifest, Postprocess, TensorSpec


def _detector(decoder: str) -> Manifest:
    return Manifest("det", "detect", ["a"], InputSpec("images", [1, 3, 64, 64], resize_mode="letterbox"),
                    [TensorSpec("output0", [1, 300, 6])], postprocess=Postprocess(decoder))


def _end2end_outputs() -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((2, 300, 6), np.float32)
    out[0, 0] = [0, 0, 10, 10, 0.9, 0]
    out[1, 0] = [20, 20, 40, 40, 0.8, 0]
    targets = np.empty(2, dtype=object)
    targets[0] = np.array([[0, 0, 0, 10, 10]], np.float32)
    targets[1] = np.array([[0, 20, 20, 40, 40]], np.float32)
    return out, targets


def test_hooks_use_the_manifest_decoder():
    out, targets = _end2end_outputs()
    hooks = task_for(_detector("end2end"))
    assert hooks.metric(out, targets)["value"] > 0.99
    assert hooks.agreement(out, out) == 1.0
    p = hooks.parity(out, out)
    assert p["detections_agreement"] == 1.0 and p["min_box_iou"] == 1.0
    # the same numbers read as a one-class YOLOv5 head (cx, cy, w, h, obj, cls) are other boxes entirely
    assert task_for(_detector("yolov5")).metric(out, targets)["value"] < 0.5


def test_a_recorded_plugin_needs_the_user_to_name_it():
    with pytest.raises(EdgekitError, match="pass --decoder some_pkg.dec:decode"):
        task_for(_detector("some_pkg.dec:decode"))
    assert task_for(_detector("some_pkg.dec:decode"), "end2end").agreement(*[_end2end_outputs()[0]] * 2) == 1.0
