"""The Python API (edgekit.load, edgekit.Camera) on the tiny real detector and classifier of tests/conftest.py:
the same objects as `edgekit camera`'s JSONL for the same frames of a real video, batch == single, records that
validate, wrong inputs refused with the fix, and `import edgekit` light."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

import edgekit
from edgekit import Camera, Classification, Detections, load
from edgekit.camera.records import load_schema
from edgekit.errors import EdgekitError
from repo_files import REPO, write_video

DET_CONF = 0.05  # the tiny seeded detector's scores are low: this keeps a few objects per frame


def _read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames


def _cli(tmp_path: Path, video: Path, *args: str) -> list[dict]:
    """`edgekit camera VIDEO r.jsonl ARGS` in a fresh process: its records."""
    out = tmp_path / "r.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "edgekit", "camera", str(video), str(out), "--threads", "1", *args],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def det_video(tmp_path_factory, tiny_yolo_dir) -> Path:
    """A real MJPG video of the digits-detect val images the tiny detector was fitted to, twice over."""
    images = [cv2.imread(str(p)) for p in sorted((tiny_yolo_dir.parent / "data" / "images" / "val").glob("*.jpg"))]
    return write_video(tmp_path_factory.mktemp("api_video") / "digits.avi", images * 2)


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (the dev extra) validates records in tests")
    return jsonschema.Draft202012Validator(load_schema())


# ---- import -----------------------------------------------------------------------------------------------

def test_import_edgekit_is_light():
    """A fresh interpreter: `import edgekit` and `from edgekit import load, Camera` load no torch, OpenCV, ONNX
    Runtime, TensorRT or tinygrad; the names resolve to the API."""
    code = ("import sys, edgekit; heavy = ('torch', 'cv2', 'onnxruntime', 'tensorrt', 'tinygrad', 'ultralytics'); "
            "bad = lambda: sorted(m for m in sys.modules if m.split('.')[0] in heavy); a = bad(); "
            "from edgekit import load, Camera, Detections; b = bad(); "
            "print(a, b, load.__module__, Camera.__module__, 'Camera' in dir(edgekit))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["[]", "[]", "edgekit.api.model", "edgekit.api.camera", "True"]


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'lod'"):
        edgekit.lod  # noqa: B018


# ---- the same results as the CLI ----------------------------------------------------------------------------

@pytest.mark.slow
def test_detector_gives_the_clis_objects(tiny_yolo_dir, det_video, tmp_path, validator):
    """load() on each decoded frame, and Camera on the video file, give exactly the objects of the CLI's JSONL;
    Camera's frames are the CLI's records (same models, same source), and validate against the schema."""
    rows = _cli(tmp_path, det_video, "--detector", str(tiny_yolo_dir), "--conf", str(DET_CONF))
    frames = _read_video(det_video)
    assert len(rows) == len(frames) == 16
    assert sum(len(r["objects"]) for r in rows) >= 8, "the tiny detector found too little to compare"
    with load(tiny_yolo_dir, conf=DET_CONF, threads=1) as model:
        assert (model.task, model.backend, model.precision) == ("detect", "onnxrt", "fp32")
        for img, row in zip(frames, rows):
            dets = model(img)
            assert isinstance(dets, Detections) and dets.image_hw == img.shape[:2]
            assert dets.to_dict() == row["objects"]
            assert dets.labels == [o["det_class"] for o in row["objects"]]
            np.testing.assert_array_equal(dets.boxes, np.array([o["box"] for o in row["objects"]], np.float32)
                                          .reshape(-1, 4))
    got = list(Camera(det_video, model=tiny_yolo_dir, conf=DET_CONF, threads=1))
    assert [f.index for f in got] == list(range(16))
    for f, row in zip(got, rows):
        d = f.to_dict()
        validator.validate(d)
        assert d["objects"] == row["objects"] and d["models"] == row["models"] and d["source"] == row["source"]
        assert f.utc == d["time"]["utc"] and f.monotonic_ns == d["time"]["monotonic_ns"] and f.classification is None
        assert f.image.shape == frames[0].shape and f.image.dtype == np.uint8


@pytest.mark.slow
def test_detector_and_classifier_give_the_clis_labels(tiny_yolo_dir, model_dir, det_video, tmp_path, validator):
    """Each detection classified: Camera gives the CLI's objects, classifier labels and scores included."""
    rows = _cli(tmp_path, det_video, "--detector", str(tiny_yolo_dir), "--classifier", str(model_dir),
                "--conf", str(DET_CONF))
    got = list(Camera(det_video, model=tiny_yolo_dir, classifier=model_dir, conf=DET_CONF, threads=1))
    cls_labels = ["0", "1", "2"]
    assert len(got) == len(rows)
    labelled = [o for f in got for o in f.detections]
    assert labelled and all(o.label in cls_labels and 0 < o.label_score <= 1 for o in labelled)
    for f, row in zip(got, rows):
        validator.validate(f.to_dict())
        assert f.to_dict()["objects"] == row["objects"]


def test_classifier_gives_the_clis_labels_and_top_k(model_dir, tmp_path, mnist5k, validator):
    """A classifier alone classifies the whole frame: load() gives the CLI's label and score as its top-1, the
    top-k sorted and of the labels; Camera's frames carry the same record and the same top-k."""
    images, labels = mnist5k
    digits = [cv2.cvtColor(cv2.resize(images[i], (64, 64)), cv2.COLOR_GRAY2BGR)
              for i in np.flatnonzero(labels <= 2)[:12]]
    video = write_video(tmp_path / "digits.avi", digits)
    rows = _cli(tmp_path, video, "--classifier", str(model_dir))
    frames = _read_video(video)
    assert len(rows) == len(frames) == 12
    with load(model_dir, top_k=2, threads=1) as model:
        assert model.task == "classify" and model.labels == ["0", "1", "2"]
        for img, row in zip(frames, rows):
            c = model(img)
            obj = row["objects"][0]
            assert isinstance(c, Classification)
            assert (c.label_id, c.label, c.score) == (obj["label_id"], obj["label"], obj["label_score"])
            assert len(c.top_k) == 2 and c.top_k[0] == (c.label_id, c.label, c.score)
            assert c.top_k[0].score >= c.top_k[1].score and c.top_k[1].label in model.labels
        got = list(Camera(video, model=model))
    assert len({r["objects"][0]["label"] for r in rows}) > 1, "a classifier that says one label proves little"
    for f, row in zip(got, rows):
        validator.validate(f.to_dict())
        assert f.to_dict()["objects"] == row["objects"]
        assert f.classification.label == row["objects"][0]["label"] and len(f.classification.top_k) == 2


# ---- batch == single --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_detector_batch_equals_single(tiny_yolo_dir):
    images = [cv2.imread(str(p)) for p in sorted((tiny_yolo_dir.parent / "data" / "images" / "val").glob("*.jpg"))]
    with load(tiny_yolo_dir, conf=DET_CONF, threads=1) as model:
        single = [model(img) for img in images]
        assert model(images) == single
        assert model(np.stack(images)) == single
        paths = sorted((tiny_yolo_dir.parent / "data" / "images" / "val").glob("*.jpg"))
        assert model([str(p) for p in paths]) == single and model(paths[0]) == single[0]
    assert any(len(d) for d in single)


def test_classifier_batch_equals_single(model_dir, val_batch, digits_imagefolder):
    paths = sorted(digits_imagefolder.rglob("*.png"))[:6]
    images = [cv2.imread(str(p)) for p in paths]
    with load(model_dir, threads=1) as model:
        single = [model(img) for img in images]
        assert model(images) == single and model(np.stack(images)) == single
        assert model([str(p) for p in paths]) == single
        gray = cv2.cvtColor(images[0], cv2.COLOR_BGR2GRAY)  # a gray image is the same picture in BGR
        assert model(gray) == single[0]


# ---- wrong inputs -----------------------------------------------------------------------------------------

def test_wrong_model_paths_name_the_fix(model_dir, tmp_path):
    with pytest.raises(EdgekitError, match="not a model directory.*manifest.json"):
        load(tmp_path)
    with pytest.raises(EdgekitError, match=f"is a file.*pass its folder {model_dir}"):
        load(model_dir / "model.onnx")
    with pytest.raises(EdgekitError, match="does not exist"):
        load(tmp_path / "nope")
    with pytest.raises(EdgekitError, match="has no trt artifact"):
        load(model_dir, backend="trt")
    for bad in ({"conf": 2.0}, {"iou": 0}, {"conf": "high"}, {"max_det": 0}, {"top_k": 0}):
        with pytest.raises(EdgekitError, match=f"{next(iter(bad))} must be"):
            load(model_dir, **bad)


def test_wrong_images_name_the_fix(model_dir, tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image")
    with load(model_dir, threads=1) as model:
        for bad, why in [(np.zeros(10, np.float32), r"float32 array of shape \(10,\).*\* 255"),
                         (np.zeros((8, 8, 3), np.float64), "float64 array"),
                         (np.zeros((8, 8, 5), np.uint8), r"shape \(8, 8, 5\)"),
                         ([], "empty list"), (42, "cannot run a model on a int"),
                         ([np.zeros((8, 8, 3), np.uint8), "x"], "cannot read the image x"),
                         (tmp_path / "notes.jpg", "cannot read the image")]:
            with pytest.raises(EdgekitError, match=why) as e:
                model(bad)
            assert "uint8 BGR image" in str(e.value)
    with pytest.raises(EdgekitError, match="is closed: load"):
        model(np.zeros((8, 8, 3), np.uint8))


def test_camera_options_are_checked(model_dir, tmp_path):
    with pytest.raises(EdgekitError, match=r"unknown option\(s\) \['fpss'\]"):
        Camera(tmp_path / "v.avi", model=model_dir, fpss=3)
    with pytest.raises(EdgekitError, match="needs a model"):
        Camera(tmp_path / "v.avi")
    with pytest.raises(EdgekitError, match="width"):
        Camera(0, model=model_dir, width=3)
    if _has_tracking():
        with pytest.raises(EdgekitError, match=r"a line is \(x1, y1, x2, y2\)"):
            Camera(0, model=model_dir, lines=[(1, 2, 3)])
    else:
        with pytest.raises(EdgekitError, match="no tracking"):
            Camera(0, model=model_dir, track=True)
    with pytest.raises(EdgekitError, match="is not a camera URI"):
        Camera(tmp_path / "missing.avi", model=model_dir)
    with load(model_dir, threads=1) as m:
        with pytest.raises(EdgekitError, match="pass them to edgekit.load"):
            Camera(0, model=m, conf=0.5)
        (tmp_path / "broken.avi").write_bytes(b"not a video")
        with pytest.raises(EdgekitError, match="could not open file source"):
            next(iter(Camera(tmp_path / "broken.avi", model=m)))


def test_camera_stops_and_closes_the_models_it_loaded(model_dir, tmp_path, mnist5k):
    images, _ = mnist5k
    video = write_video(tmp_path / "v.avi", [cv2.cvtColor(cv2.resize(im, (32, 32)), cv2.COLOR_GRAY2BGR)
                                             for im in images[:10]])
    cam = Camera(video, model=model_dir, threads=1, max_frames=4)
    assert [f.index for f in cam] == [0, 1, 2, 3]
    seen = []
    with Camera(video, model=model_dir, threads=1) as cam:
        for f in cam:
            seen.append(f.index)
            if f.index == 2:
                cam.stop()
    assert seen == [0, 1, 2] and cam.stats["frames"] >= 3  # a reader thread may have read ahead
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # a runner never closed warns when collected
        with Camera(video, model=model_dir, threads=1) as cam:
            next(iter(cam))
        gc.collect()
    assert cam.timer.stats()["classify"].n == 1  # the camera's per-stage times cover the frames read


def _has_tracking() -> bool:
    import dataclasses

    from edgekit.camera.loop import CameraConfig

    return {"track", "line"} <= {f.name for f in dataclasses.fields(CameraConfig)}



def test_the_shared_frame_path_runs_a_tracker_and_carries_its_counts(model_dir):
    """camera.frames.frame_results (the CLI's and Camera's per-frame path) hands each frame's objects to a tracker
    (camera --track's hook; a stand-in here that numbers the objects) and returns its counts with the frame."""
    from edgekit.camera.frames import FrameTimer, frame_results
    from edgekit.camera.pipeline import Pipeline

    class Numbering:
        def __init__(self):
            self.n = 0

        def update(self, objects):
            for o in objects:
                self.n += 1
                o["track_id"] = self.n
            return {"lines": [{"line": [0, 1, 2, 3], "in": {"x": self.n}, "out": {}}]}

    frames = [np.full((40, 30), v, np.uint8) for v in (0, 128, 255)]  # gray frames are made BGR on the way
    with load(model_dir, threads=1) as m:
        timer = FrameTimer()
        got, stages = [], []
        for r in frame_results(frames, Pipeline(None, m.runner), timer, tracker=Numbering()):
            got.append(r)
            stages.append(set(timer.frame_ns))  # this frame's stages, so far
    assert [r.index for r in got] == [0, 1, 2] and all(r.image.shape == (40, 30, 3) for r in got)
    assert [r.objects[0]["track_id"] for r in got] == [1, 2, 3]
    assert [r.counts["lines"][0]["in"]["x"] for r in got] == [1, 2, 3]
    assert timer.stats()["track"].n == 3 and all(s >= {"capture", "classify", "track"} for s in stages)


@pytest.mark.slow
@pytest.mark.skipif(not _has_tracking(), reason="this edgekit's camera loop has no tracking (camera --track)")
def test_camera_tracks_and_counts_as_the_cli(tiny_yolo_dir, det_video, tmp_path, validator):
    """Camera(lines=, zones=) gives the CLI's track ids and line/zone counts (`--line`, `--zone`) frame by frame,
    and the README's counting loop reads them."""
    pytest.importorskip("supervision", reason="tracking needs the track extra (supervision, trackers)")
    rows = _cli(tmp_path, det_video, "--detector", str(tiny_yolo_dir), "--conf", str(DET_CONF),
                "--line", "0,48,96,48", "--zone", "0,0,48,0,48,96,0,96")
    got = list(Camera(det_video, model=tiny_yolo_dir, conf=DET_CONF, threads=1, lines=[(0, 48, 96, 48)],
                      zones=[[(0, 0), (48, 0), (48, 96), (0, 96)]]))
    assert len(got) == len(rows) == 16
    assert any(o["track_id"] is not None for r in rows for o in r["objects"]), "nothing tracked: a weak test"
    for f, row in zip(got, rows):
        validator.validate(f.to_dict())
        assert f.to_dict()["objects"] == row["objects"] and f.counts == row["counts"]
        line = f.counts["lines"][0]  # the README's counting loop
        assert line["in"].get("digit", 0) >= 0 and line["out"].get("digit", 0) >= 0
