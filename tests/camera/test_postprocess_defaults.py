"""The camera's detection thresholds come from the model (its manifest's postprocess: what its export checks
used, ultralytics predict's 0.25 / 0.7 / 300 for edgekit's detectors), flags override them, and the loop says
which it used. The old fixed defaults (IoU 0.45, 100 detections) dropped boxes that ultralytics predict keeps."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from edgekit.camera.loop import CameraConfig, run_camera
from edgekit.cli import build_parser
from edgekit.configs import dataclass_from_args
from edgekit.manifest import Manifest, Postprocess
from edgekit.vision.detect import letterbox_params, postprocess


def _crowded_head() -> np.ndarray:
    """(1, 5, N) one-class head: 120 boxes apart from each other, and 40 more, each overlapping one of the
    first 40 at IoU 0.6 (between the old 0.45 and predict's 0.7)."""
    rows = []
    for i in range(120):
        x, y = 20 + (i % 12) * 50, 20 + (i // 12) * 50
        rows.append((x, y, 20, 20, 0.9 - i * 0.004))
        if i < 40:  # shifted by 5 px: intersection 15*20 = 300, union 500, IoU 0.6
            rows.append((x + 5, y, 20, 20, 0.5 - i * 0.004))
    head = np.zeros((1, 5, len(rows) + 16), np.float32)
    head[0, :, :len(rows)] = np.asarray(rows, np.float32).T
    return head


def test_predict_thresholds_keep_the_boxes_the_old_camera_defaults_dropped():
    import torch
    from ultralytics.utils.nms import non_max_suppression

    head, lb = _crowded_head(), letterbox_params((640, 640), (640, 640))
    old = postprocess(head, lb, conf=0.25, iou=0.45, max_det=100)
    pp = Postprocess()  # what a detector's manifest records unless its export says otherwise
    new = postprocess(head, lb, decoder=pp.decoder, conf=pp.conf, iou=pp.iou, max_det=pp.max_det)
    assert (len(old), len(new)) == (100, 160)
    ref = non_max_suppression(torch.from_numpy(head), pp.conf, pp.iou, max_det=pp.max_det)[0].numpy()
    assert len(ref) == 160  # ultralytics predict's own NMS keeps them all too
    np.testing.assert_allclose(np.sort(new.scores), np.sort(ref[:, 4]), rtol=1e-6)
    kept = {tuple(b) for b in new.boxes.tolist()}
    assert {tuple(b) for b in old.boxes.tolist()} < kept


def _copy_with(tiny_yolo_dir, tmp_path, post: Postprocess | None):
    d = tmp_path / "det"
    shutil.copytree(tiny_yolo_dir, d)
    if post is not None:
        m = Manifest.load(d)
        m.postprocess = post
        m.save()
    return d


@pytest.mark.parametrize("post, flags, want", [
    (None, [], Postprocess("yolov8", 0.25, 0.7, 300)),  # an edgekit detector: predict's thresholds
    (Postprocess("yolov8", 0.3, 0.6, 50), [], Postprocess("yolov8", 0.3, 0.6, 50)),
    (Postprocess("yolov8", 0.3, 0.6, 50), ["--iou", "0.45", "--max-det", "100"], Postprocess("yolov8", 0.3, 0.45, 100)),
])
def test_camera_thresholds_come_from_the_manifest_and_flags_override(tiny_yolo_dir, tmp_path, caplog, post, flags,
                                                                     want):
    d = _copy_with(tiny_yolo_dir, tmp_path, post)
    images = tiny_yolo_dir.parent / "data" / "images" / "val"
    args = build_parser().parse_args(["camera", str(images), "--detector", str(d), "--max-frames", "2",
                                      "--report", str(tmp_path / "r.json"), "--threads", "1", *flags])
    cfg = dataclass_from_args(CameraConfig, args)
    with caplog.at_level(logging.INFO, logger="edgekit.camera.loop"):
        run_camera(cfg)
    used = json.loads((tmp_path / "r.json").read_text())["config"]
    assert Postprocess(**{k: used[k] for k in ("decoder", "conf", "iou", "max_det")}) == want
    line = f"detector: yolov8 decoder, conf {want.conf:g}, IoU {want.iou:g}, max {want.max_det} detections per frame"
    assert line in caplog.text
    assert ("--iou, --max-det given" in caplog.text) == bool(flags)


def test_camera_refuses_a_plugin_the_user_did_not_name(tiny_yolo_dir, tmp_path):
    from edgekit.errors import EdgekitError

    d = _copy_with(tiny_yolo_dir, tmp_path, Postprocess("some_pkg.decoders:decode"))
    images = tiny_yolo_dir.parent / "data" / "images" / "val"
    with pytest.raises(EdgekitError, match="pass --decoder some_pkg.decoders:decode"):
        run_camera(CameraConfig(input=str(images), detector=str(d), max_frames=1))
