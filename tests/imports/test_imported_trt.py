"""`edgekit export IMPORTED_DETECTOR --to trt`, without TensorRT (not installable here): an imported ONNX detector
directory goes through the detector's task hooks like a trained one. The INT8 calibration batches and the
engine check's held-out inputs are letterboxed (not a classifier's resize + crop), the check compares boxes, and
the missing library is one clear line from the CLI (exit 2, no traceback)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.data.imagefolder import read_image
from edgekit.errors import EdgekitError
from edgekit.export.calibrator_trt import calibration_batches_for
from edgekit.manifest import Manifest
from edgekit.vision.detect import LetterboxInput
from edgekit.vision.preprocess import batch_classify
from tests.export.test_trt_export import _ort_as_engine
from tests.repo_files import REPO


@pytest.fixture(scope="module")
def imported_det(tiny_yolo_dir, tiny_yolo_wide_data, tmp_path_factory) -> Path:
    """The tiny YOLO's ultralytics ONNX imported (ultralytics metadata: letterbox, decoder yolov8), with the wide
    dataset recorded as its held-out data: letterboxing pads those images, a resize + crop would cut them."""
    from edgekit.imports import ImportConfig, import_model

    out = tmp_path_factory.mktemp("imported_trt") / "det"
    import_model(tiny_yolo_dir / "model.onnx", out, ImportConfig(data=str(tiny_yolo_wide_data)))
    return out


def test_imported_detector_calibrates_trt_on_letterboxed_training_images(imported_det, tiny_yolo_wide_data):
    from edgekit.data.yolo import detection_train_split

    m = Manifest.load(imported_det)
    assert m.task == "detect" and m.source.get("import")  # an imported directory, not a trained one
    batches = calibration_batches_for(m, batch_size=2, images=4, seed=1)  # the dataset the import recorded
    root = tiny_yolo_wide_data.parent.resolve()
    assert batches.shape == (2, 3, 64, 64) and len(batches) == 2
    assert all(Path(p).resolve().parent == root / "images" / "train" for p in batches.paths)  # never held-out
    got = np.concatenate(list(batches))
    images = [read_image(p) for p in batches.paths]
    assert all(img.shape[0] < img.shape[1] for img in images)
    np.testing.assert_array_equal(got, np.concatenate([LetterboxInput((64, 64))(img)[0].copy() for img in images]))
    assert not np.allclose(got, batch_classify(images, m.input), atol=0.05)
    calib, _ = detection_train_split(m, tiny_yolo_wide_data, n=4, minimum=1, seed=1, n_tune=0)
    np.testing.assert_array_equal(got, calib.x)  # the same images the ONNX INT8 export calibrates on


def test_imported_detector_engine_check_feeds_letterboxed_val_images(imported_det, tiny_yolo_wide_data,
                                                                     monkeypatch):
    from edgekit.data.yolo import load_split, read_dataset_yaml
    from edgekit.export import trt as trt_export
    from edgekit.export.trt import TrtBuildConfig
    from edgekit.runners import trt as trt_runner

    m = Manifest.load(imported_det)
    onnx_path = m.artifact_path(m.find_artifact("onnxrt", "fp32"))
    fed: list[np.ndarray] = []
    monkeypatch.setattr(trt_runner, "TrtRunner", _ort_as_engine(onnx_path, m.input.name, fed))
    r = trt_export._check_against_onnxrt(m, onnx_path, "fp16", TrtBuildConfig(check_images=5))
    val = load_split(read_dataset_yaml(tiny_yolo_wide_data), "val", limit=5)
    want = [LetterboxInput((64, 64))(read_image(p))[0].copy() for p in val.paths]
    np.testing.assert_array_equal(np.concatenate(fed), np.concatenate(want))
    assert r["passed"] and r["images"] == 5 and r["detections_agreement"] == 1.0 and "min_box_iou" in r


def test_imported_detector_without_data_says_what_to_pass_for_trt_int8(tiny_yolo_dir, tmp_path):
    from edgekit.imports import ImportConfig, import_model

    out = tmp_path / "bare"
    import_model(tiny_yolo_dir / "model.onnx", out, ImportConfig())
    with pytest.raises(EdgekitError, match="--data"):
        calibration_batches_for(Manifest.load(out), batch_size=2, images=4)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_cli_export_imported_detector_to_trt_without_tensorrt_is_one_line(imported_det, tmp_path, precision):
    code = ("import sys; sys.modules['tensorrt'] = None; from edgekit.cli import main; "
            f"sys.exit(main(['export', {str(imported_det)!r}, '--to', 'trt', '--precision', {precision!r}]))")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: TensorRT is not importable"), p.stderr
    assert "python3-libnvinfer" in lines[0]
