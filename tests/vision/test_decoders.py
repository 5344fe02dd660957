"""Detector output decoders on crafted tensors (exact boxes for each layout), the choice of a decoder from the
output shape and metadata (ambiguous or unmatched shapes are an error naming --decoder, never a guess), and the
plug-in point (a module path or an entry point, never a file, never from inside a model directory)."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.vision.decoders import (DECODERS, Detections, choose_decoder, decode, decode_end2end, decode_yolo,
                                     decode_yolov5, resolve_decoder)
from edgekit.vision.detect import letterbox_params, postprocess

# (cx, cy, w, h, class scores): two overlapping class-0 boxes (IoU 0.68), one class-1 box on top of them, one
# class-2 box apart, one below every threshold
ROWS = [(50, 50, 20, 20, [0.9, 0.1, 0.0]), (52, 52, 20, 20, [0.8, 0.0, 0.1]), (50, 50, 20, 20, [0.2, 0.7, 0.0]),
        (10, 10, 8, 6, [0.0, 0.1, 0.6]), (30, 30, 10, 10, [0.1, 0.1, 0.1])]
# what predict keeps at conf 0.25, IoU 0.45: best class per box, class-aware NMS, by descending score
EXPECT_BOXES = [[40, 40, 60, 60], [40, 40, 60, 60], [6, 7, 14, 13]]
EXPECT_SCORES, EXPECT_CLASSES = [0.9, 0.7, 0.6], [0, 1, 2]


def v8_head(rows=ROWS, pad: int = 3) -> np.ndarray:
    nc = len(rows[0][4])
    out = np.zeros((1, 4 + nc, len(rows) + pad), np.float32)
    for i, (cx, cy, w, h, s) in enumerate(rows):
        out[0, :, i] = [cx, cy, w, h, *s]
    return out


def v5_head(v8: np.ndarray) -> np.ndarray:
    """The same predictions in YOLOv5's layout: transposed, objectness = the best class score, class scores
    divided by it, so obj * cls gives them back."""
    p = v8[0].T
    obj = p[:, 4:].max(1, keepdims=True)
    cls = np.divide(p[:, 4:], obj, out=np.zeros_like(p[:, 4:]), where=obj > 0)
    return np.concatenate([p[:, :4], obj, cls], 1)[None].astype(np.float32)


def _check(det: Detections, boxes=EXPECT_BOXES, scores=EXPECT_SCORES, classes=EXPECT_CLASSES) -> None:
    np.testing.assert_array_equal(det.boxes, np.asarray(boxes, np.float32))
    np.testing.assert_allclose(det.scores, scores, rtol=1e-6)
    assert det.classes.tolist() == classes


# ---- the three layouts -----------------------------------------------------------------------------------

def test_yolov8_layout_exact_boxes():
    _check(decode(v8_head(), "yolov8", conf=0.25, iou=0.45))
    # with IoU 0.7 the two class-0 boxes (IoU 0.68) both stay
    _check(decode_yolo(v8_head(), conf=0.25, iou=0.7), EXPECT_BOXES[:1] + [[42, 42, 62, 62]] + EXPECT_BOXES[1:],
           [0.9, 0.8, 0.7, 0.6], [0, 0, 1, 2])


def test_yolov5_layout_gives_the_v8_boxes_and_multiplies_objectness():
    for kw in ({"conf": 0.25, "iou": 0.45}, {"conf": 0.25, "iou": 0.45, "multi_label": True},
               {"conf": 0.05, "iou": 0.7, "max_det": 4}, {"conf": 0.25, "iou": 0.45, "agnostic": True}):
        a, b = decode(v8_head(), "yolov8", **kw), decode(v5_head(v8_head()), "yolov5", **kw)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
        assert a.classes.tolist() == b.classes.tolist()
    # score = obj * cls: 0.5 * 0.9 = 0.45 passes conf 0.4; 0.3 * 1.0 does not, nor does 0.9 * 0.4
    rows = np.array([[[20, 20, 10, 10, 0.5, 0.9, 0.1], [60, 60, 4, 4, 0.3, 1.0, 0.0], [5, 5, 2, 2, 0.9, 0.1, 0.4]]],
                    np.float32)
    _check(decode_yolov5(rows, conf=0.4), [[15, 15, 25, 25]], [0.45], [0])


def test_end2end_layout_is_only_filtered():
    pred = np.zeros((1, 300, 6), np.float32)
    pred[0, :4] = [[1, 2, 3, 4, 0.9, 1], [1, 2, 3, 4, 0.8, 1], [5, 6, 7, 8, 0.5, 0], [9, 9, 12, 12, 0.2, 2]]
    # overlapping boxes stay: the graph did its own suppression
    _check(decode(pred, "end2end", conf=0.25, iou=0.1), [[1, 2, 3, 4], [1, 2, 3, 4], [5, 6, 7, 8]],
           [0.9, 0.8, 0.5], [1, 1, 0])
    _check(decode_end2end(pred, conf=0.25, max_det=1), [[1, 2, 3, 4]], [0.9], [1])
    assert len(decode(pred, "end2end", conf=0.95)) == 0


def test_postprocess_uses_the_decoder_it_is_given():
    """A (1, N, 6) output read as end2end and as a one-class yolov5 head gives different boxes: why the
    decoder comes from the manifest, not from the shape."""
    pred = np.array([[[10, 10, 20, 20, 0.9, 0.8]]], np.float32)
    lb = letterbox_params((64, 64), (64, 64))
    assert postprocess(pred, lb, decoder="end2end").boxes.tolist() == [[10, 10, 20, 20]]
    assert postprocess(pred, lb, decoder="yolov5").boxes.tolist() == [[0, 0, 20, 20]]  # cx 10 w 20 clipped at 0
    with pytest.raises(EdgekitError, match="not built in"):
        postprocess(pred, lb, decoder="nope")


def test_wrong_shapes_for_a_decoder_are_clear():
    with pytest.raises(EdgekitError, match="5\\+classes"):
        decode(np.zeros((1, 10, 5), np.float32), "yolov5")
    with pytest.raises(EdgekitError, match="\\(1, K, 6\\)"):
        decode(np.zeros((1, 10, 7), np.float32), "end2end")


# ---- choosing a decoder ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, nc, meta, want", [
    ((1, 84, 8400), 80, None, "yolov8"),
    ((1, 84, "anchors"), 80, {}, "yolov8"),  # dynamic input size: the anchor count is a name
    ((1, 5, 84), 1, None, "yolov8"),  # the tiny test detector
    ((1, 25200, 85), 80, None, "yolov5"),
    ((1, "n", 85), 80, None, "yolov5"),
    ((1, 300, 6), 80, None, "end2end"),
    ((1, 300, 6), 1, {"end2end": "True"}, "end2end"),  # YOLOv10 / YOLO26 metadata (ONNX stores strings)
    ((1, 300, 6), 1, {"task": "detect", "end2end": "False", "args": "{'batch': 1, 'nms': True}"}, "end2end"),
    ((1, 300, 6), 1, {"end2end": False}, "yolov5"),  # says it does not end in NMS
    ((1, 6, 8400), 2, {"end2end": "False"}, "yolov8"),
])
def test_choose_decoder(shape, nc, meta, want):
    assert choose_decoder(shape, nc, meta) == want


def _one_line_error(*args, **kw) -> str:
    with pytest.raises(EdgekitError) as e:
        choose_decoder(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg and "--decoder" in msg, msg
    return msg


@pytest.mark.parametrize("shape, nc, names", [
    ((1, 6, 6), 2, ("yolov8", "end2end")),  # 4+nc == 6 == K
    ((1, 300, 6), 1, ("yolov5", "end2end")),  # a one-class YOLOv5 head or an NMS'd graph
    ((1, 84, 84), 80, ("yolov8", "transposed")),  # 4+nc == N: which axis is which
    ((1, 84, 8400), None, ("yolov8", "yolov5")),  # no labels: either layout
])
def test_ambiguous_shapes_name_decoder(shape, nc, names):
    msg = _one_line_error(shape, nc, None)
    assert all(n in msg for n in names) and all(d in msg for d in DECODERS), msg


@pytest.mark.parametrize("shape, nc", [((1, 84, 8400), 3), ((1, 1000), 1000), ((1, 3, 224, 224), 3),
                                       ((1, "c", 8400), 80), ((1, 300, 7), 80)])
def test_unmatched_shapes_name_decoder(shape, nc):
    assert "no built-in decoder fits" in _one_line_error(shape, nc, {})


def test_metadata_that_contradicts_the_shape_or_is_not_a_detector():
    assert "ends in NMS" in _one_line_error((1, 84, 8400), 80, {"end2end": True})
    assert "task 'segment'" in _one_line_error((1, 116, 8400), 80, {"task": "segment"})
    assert choose_decoder((1, 116, 8400), 80, {"task": "segment"}, "mypkg.seg:decode") == "mypkg.seg:decode"


def test_requested_decoder_wins_when_it_fits():
    assert choose_decoder((1, 300, 6), 1, None, "end2end") == "end2end"
    assert choose_decoder((1, 300, 6), 1, None, "yolov5") == "yolov5"
    assert "reads (1, N, 5+nc)" in _one_line_error((1, 84, 8400), 80, None, "yolov5")
    assert "did you mean 'yolov8'" in _one_line_error((1, 84, 8400), 80, None, "yolo8")
    for bad in ("./dec.py:decode", "/abs/dec:decode", "dec.py", "a:b:c", "my mod:f"):
        with pytest.raises(EdgekitError, match="--decoder"):
            choose_decoder((1, 84, 8400), 80, None, bad)


# ---- plug-ins ----------------------------------------------------------------------------------------

PLUGIN = '''
import numpy as np
from edgekit.vision.decoders import Detections

def decode(pred, *, conf, iou, max_det):
    """A made-up layout: (1, K, 6) rows of score, class, x1, y1, x2, y2."""
    rows = pred[0][pred[0][:, 0] > conf][:max_det]
    return Detections(rows[:, 2:], rows[:, 0], rows[:, 1].astype(np.int64))

def as_tuple(pred, **kw):
    d = decode(pred, **kw)
    return d.boxes, d.scores, d.classes

def wrong(pred, **kw):
    return np.zeros((2, 3))
'''


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    name = f"edgekit_test_plugin_{tmp_path.name.replace('-', '_')}"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / f"{name}.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    yield name
    sys.modules.pop(name, None)


def test_plugin_by_module_path(plugin_module):
    pred = np.array([[[0.9, 2, 1, 2, 3, 4], [0.1, 0, 5, 5, 6, 6]]], np.float32)
    for fn in ("decode", "as_tuple"):
        dec = resolve_decoder("yolov8", f"{plugin_module}:{fn}")  # the user's --decoder wins over the manifest's
        _check(decode(pred, dec, conf=0.25), [[1, 2, 3, 4]], [0.9], [2])
        det = postprocess(pred, letterbox_params((8, 8), (8, 8)), decoder=dec, conf=0.25)
        assert det.boxes.tolist() == [[1, 2, 3, 4]]
    with pytest.raises(EdgekitError, match="returned ndarray"):
        decode(pred, resolve_decoder("yolov8", f"{plugin_module}:wrong"))


def test_plugin_refusals(plugin_module, tmp_path):
    spec = f"{plugin_module}:decode"
    # recorded in a manifest: never imported on the manifest's word
    with pytest.raises(EdgekitError, match=f"pass --decoder {spec}"):
        resolve_decoder(spec, "", model_dir=tmp_path / "model")
    assert plugin_module not in sys.modules
    # a module that would be imported from inside the model directory
    with pytest.raises(EdgekitError, match="inside the model directory"):
        resolve_decoder(spec, spec, model_dir=tmp_path / "plugins")
    assert plugin_module not in sys.modules
    for bad, why in ((f"{tmp_path}/plugins/{plugin_module}.py:decode", "file path"),
                     (f"{plugin_module}.py:decode", "file path"),
                     ("edgekit_no_such_module_x:decode", "cannot import"),
                     (f"{plugin_module}:missing", "has no 'missing'"),
                     ("edgekit_no_such_entry_point", "entry points in group edgekit.decoders")):
        with pytest.raises(EdgekitError, match=why):
            resolve_decoder("yolov8", bad)


def test_plugin_by_entry_point(plugin_module, tmp_path, monkeypatch):
    """An installed distribution's entry point in group edgekit.decoders (a dist-info on sys.path is what pip
    installs)."""
    info = tmp_path / "plugins" / "edgekit_test_decoder-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edgekit-test-decoder\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[edgekit.decoders]\nmadeup = {plugin_module}:decode\n")
    assert choose_decoder((1, 7, 6), 3, None, "madeup") == "madeup"
    dec = resolve_decoder("madeup", "madeup")
    pred = np.array([[[0.9, 2, 1, 2, 3, 4]]], np.float32)
    _check(decode(pred, dec), [[1, 2, 3, 4]], [0.9], [2])


def test_decoders_import_numpy_only():
    import subprocess

    code = ("import sys, edgekit.vision.decoders; "
            "assert not {'torch', 'cv2', 'ultralytics', 'onnxruntime'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
