"""edgekit.tasks: one registry; a manifest or a task's name gives its Task; an unknown task is a clear error."""
from __future__ import annotations

import pytest

from edgekit.errors import EdgekitError
from edgekit.manifest import Manifest
from edgekit.tasks import TASKS, task_for


def test_task_for_a_name_and_a_manifest(model_dir, tiny_yolo_dir):
    assert sorted(TASKS) == ["classify", "detect"]
    assert task_for("classify") is task_for(Manifest.load(model_dir)) is TASKS["classify"]
    assert task_for(Manifest.load(tiny_yolo_dir)).name == "detect"


def test_unknown_task_lists_the_known_ones(model_dir):
    m = Manifest.load(model_dir)
    m.task = "segment"
    with pytest.raises(EdgekitError, match=r"knows the tasks \['classify', 'detect'\], not 'segment'") as e:
        task_for(m)
    assert str(model_dir) in str(e.value)
    with pytest.raises(EdgekitError, match="not 'pose'"):
        task_for("pose")


def test_report_columns_come_from_the_task():
    row = {"accuracy": {"value": 0.5, "mAP50": 0.7}, "parity": {"detections_agreement": 1.0}}
    det = task_for("detect")
    assert det.column_value(row, "mAP50") == 0.7 and det.column_value(row, "box_agreement") == 1.0
    assert det.column_value(row, "min_box_iou") is None
    with pytest.raises(KeyError):
        det.column_value(row, "top1")


def test_the_manifest_accepts_exactly_the_registered_tasks():
    from edgekit.manifest import TASKS as MANIFEST_TASKS

    assert sorted(MANIFEST_TASKS) == sorted(TASKS)


def test_what_differs_between_tasks_is_asked_of_the_task(tiny_yolo_dir, model_dir):
    from edgekit.export.onnx import check_dynamic_batch
    from edgekit.tasks import require_framework, tasks_of

    cls, det = task_for("classify"), task_for("detect")
    assert (cls.framework, det.framework) == ("torchvision", "ultralytics") and tasks_of("ultralytics") == ["detect"]
    check_dynamic_batch(cls, True)
    with pytest.raises(EdgekitError, match="'detect' models export with a fixed batch of 1: drop --dynamic-batch"):
        check_dynamic_batch(det, True)
    assert require_framework(Manifest.load(tiny_yolo_dir), "ultralytics", "x") is det
    with pytest.raises(EdgekitError, match=r"holds a 'classify' model \(torchvision\); ultralytics' own benchmark "
                                           r"takes ultralytics models \(detect\)"):
        require_framework(Manifest.load(model_dir), "ultralytics", "ultralytics' own benchmark")
    for t in (cls, det):
        assert set(t.trt_min_agreement) == {"fp32", "fp16", "int8"} and 0 < t.int8_min_agreement <= 1
