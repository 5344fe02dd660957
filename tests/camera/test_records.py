"""The result record: every field the schema promises, from real runs (classifier alone; detector + classifier),
validated against the JSON Schema shipped in the package; the schema rejects broken records; credentials
never reach a record."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edgekit.camera.loop import CameraConfig, run_camera
from edgekit.camera.records import SCHEMA_FILE, SCHEMA_VERSION, RecordMaker, load_schema, utc_iso
from edgekit.manifest import Manifest

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (the dev extra) validates records in tests")


@pytest.fixture(scope="module")
def validator():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_schema_file_is_packaged_and_versioned():
    schema = load_schema()
    assert SCHEMA_FILE.parent.name == "camera" and schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"edgekit.camera" = ["record.schema.json"]' in pyproject  # shipped in the wheel, not only the repo


def test_a_record_has_time_source_models_and_track_ids(validator):
    runner = SimpleNamespace(manifest=SimpleNamespace(name="digits"), artifact="m/model.onnx", backend="onnxrt",
                             precision="int8")
    make = RecordMaker("rtsp://admin:hunter2@cam.local:554/live", None, runner)
    before = time.time()
    captured = make.now()
    rec = make(7, [{"box": [0.0, 0.0, 64.0, 48.0], "det_id": 0, "det_class": "frame", "det_score": 1.0,
                    "label_id": 3, "label": "3", "label_score": 0.75}], captured)
    validator.validate(rec)
    assert rec["schema_version"] == SCHEMA_VERSION and rec["frame"] == 7
    assert rec["source"] == "rtsp://admin:***@cam.local:554/live" and "hunter2" not in json.dumps(rec)
    assert rec["models"] == {"detector": None, "classifier": {"name": "digits", "backend": "onnxrt",
                                                              "precision": "int8"}}
    assert rec["objects"][0]["track_id"] is None
    utc = datetime.strptime(rec["time"]["utc"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(utc.timestamp() - before) < 60 and rec["time"]["monotonic_ns"] == captured[0]


def test_utc_iso_is_exact():
    assert utc_iso(0) == "1970-01-01T00:00:00.000000Z"
    assert utc_iso(1_764_522_082_123_456_789) == "2025-11-30T17:01:22.123456Z"


@pytest.mark.parametrize("breakage", ["no time", "box of 3", "score above 1", "version 2", "label without id",
                                      "string track id", "unknown backend"])
def test_the_schema_rejects_broken_records(validator, breakage):
    rec = RecordMaker("clip.mp4")(0, [{"box": [1.0, 2.0, 3.0, 4.0], "det_id": 0, "det_class": "digit",
                                       "det_score": 0.5, "label_id": 1, "label": "1", "label_score": 0.9}], (1, 2))
    validator.validate(rec)
    o = rec["objects"][0]
    if breakage == "no time":
        del rec["time"]
    elif breakage == "box of 3":
        o["box"] = [1.0, 2.0, 3.0]
    elif breakage == "score above 1":
        o["det_score"] = 1.5
    elif breakage == "version 2":
        rec["schema_version"] = 2
    elif breakage == "label without id":
        del o["label_id"]
    elif breakage == "string track id":
        o["track_id"] = "7"
    else:
        rec["models"] = {"detector": {"name": "d", "backend": "tensorflow", "precision": "fp32"}, "classifier": None}
    assert not validator.is_valid(rec)


def _video(path: Path, frames: int = 12) -> Path:
    """A real MJPG video of moving shapes on noise (64x48)."""
    rng = np.random.default_rng(1)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(frames):
        f = rng.integers(0, 60, (48, 64, 3), np.uint8)
        cv2.circle(f, (8 + 4 * i, 24), 8, (255, 255, 255), -1)
        w.write(f)
    w.release()
    return path


def test_records_of_a_real_classifier_run_validate(validator, model_dir, tmp_path):
    video = _video(tmp_path / "v.avi")
    run_camera(CameraConfig(input=str(video), output=[str(tmp_path / "r.jsonl")], classifier=str(model_dir),
                            threads=1))
    rows = _rows(tmp_path / "r.jsonl")
    assert [r["frame"] for r in rows] == list(range(12))
    for r in rows:
        validator.validate(r)
    name = Manifest.load(model_dir).name
    assert rows[0]["models"] == {"detector": None, "classifier": {"name": name, "backend": "onnxrt",
                                                                  "precision": "fp32"}}
    assert rows[0]["source"] == str(video)
    o = rows[0]["objects"]
    assert len(o) == 1 and o[0]["box"] == [0.0, 0.0, 64.0, 48.0] and o[0]["det_class"] == "frame"
    assert o[0]["label"] in Manifest.load(model_dir).labels and o[0]["track_id"] is None
    mono = [r["time"]["monotonic_ns"] for r in rows]
    utc = [r["time"]["utc"] for r in rows]
    assert mono == sorted(mono) and len(set(mono)) == len(mono) and utc == sorted(utc)


@pytest.mark.slow
def test_records_of_a_real_detect_and_classify_run_validate(validator, tiny_yolo_dir, model_dir, tmp_path):
    """The tiny YOLO on the digits-detect images it was fitted to, each detection classified: every record
    validates, the boxes lie in the frame and each object has the detector's and the classifier's fields."""
    images = tiny_yolo_dir.parent / "data" / "images" / "val"
    run_camera(CameraConfig(input=str(images), output=[str(tmp_path / "r.jsonl")], detector=str(tiny_yolo_dir),
                            classifier=str(model_dir), threads=1, conf=0.05))
    rows = _rows(tmp_path / "r.jsonl")
    assert len(rows) == len(list(images.glob("*.jpg")))
    objects = [o for r in rows for o in r["objects"]]
    assert objects, "the tiny detector found nothing on its own val images"
    h, w = cv2.imread(str(next(images.glob("*.jpg")))).shape[:2]
    for r in rows:
        validator.validate(r)
        assert r["models"]["detector"] == {"name": Manifest.load(tiny_yolo_dir).name, "backend": "onnxrt",
                                           "precision": "fp32"}
    for o in objects:
        x1, y1, x2, y2 = o["box"]
        assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
        assert o["det_class"] == "digit" and {"label", "label_id", "label_score"} <= set(o)
