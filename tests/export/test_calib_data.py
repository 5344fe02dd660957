"""`--calib-data DIR`: FP16/INT8 export on a folder of unlabelled pictures, for a classifier and a detector.
What is measured is agreement with FP32 (its own outputs as targets), and the manifest and the output say so;
calibration and measuring pictures never overlap; too few pictures is one clear error."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.export import unlabelled
from edgekit.export.fp16 import Fp16ExportConfig, fp16_from_onnx
from edgekit.export.int8 import Int8ExportConfig, int8_from_onnx
from edgekit.tasks import task_for
from edgekit.manifest import Manifest
from edgekit.vision.detect import letterbox, to_input
from tests.repo_files import REPO


@pytest.fixture(scope="module")
def digit_pictures(tmp_path_factory, mnist5k) -> Path:
    """40 real digits of every class, flat and in one nested folder, no class folders: unlabelled."""
    images, _ = mnist5k
    root = tmp_path_factory.mktemp("unlabelled")
    (root / "nested").mkdir()
    for i in range(40):
        assert cv2.imwrite(str(root / ("nested" if i % 3 else ".") / f"pic{i:03d}.png"), images[1000 + i])
    (root / "notes.txt").write_text("not a picture")
    return root


def _detector_pictures(model_dir: Path, dest: Path) -> Path:
    """The tiny detector's dataset pictures (train and val) copied into one folder, without their labels."""
    data = Path(Manifest.load(model_dir).source["dataset"]["yaml"]).parent
    dest.mkdir()
    for p in sorted((data / "images").rglob("*.jpg")):
        shutil.copy(p, dest / f"{p.parent.name}_{p.name}")
    return dest


def test_fp16_on_unlabelled_pictures_measures_agreement_not_accuracy(model_copy, digit_pictures):
    art = fp16_from_onnx(model_copy, Fp16ExportConfig(calib_data=str(digit_pictures)))
    a = art.accuracy
    assert a["metric"] == "top1_vs_fp32" and a["labels"] == unlabelled.NO_LABELS
    assert a["split"] == "unlabelled (--calib-data)" and a["n"] == 40 and a["root"] == str(digit_pictures)
    fp32 = Manifest.load(model_copy).find_artifact("onnxrt", "fp32").accuracy
    assert fp32["metric"] == "top1_vs_fp32" and fp32["value"] == 1.0  # FP32 agrees with itself, by definition
    assert a["value"] == art.parity["agreement"]  # the same quantity, measured twice


def test_int8_calibrates_and_measures_on_disjoint_pictures(model_copy, digit_pictures):
    cfg = Int8ExportConfig(calib_data=str(digit_pictures), latency_rounds=0, allow_over_budget=True)
    art = int8_from_onnx(model_copy, cfg)
    c = art.options["calibration"]
    assert c["split"] == "unlabelled (--calib-data)" and c["root"] == str(digit_pictures)
    assert c["images"] == 40 - unlabelled.MIN_HELD  # the minimum left for measuring
    a = art.accuracy
    assert a["metric"] == "top1_vs_fp32" and a["n"] == unlabelled.MIN_HELD and a["labels"] == unlabelled.NO_LABELS
    m = Manifest.load(model_copy)
    src = m.artifact_path(m.find_artifact("onnxrt", "fp32"))
    calib, _, held, _ = unlabelled.int8_split(m, task_for(m), digit_pictures, src, n=200, minimum=32, seed=0,
                                              n_tune=10)
    pairs = {(i, j) for i in range(len(calib.x)) for j in range(len(held.x)) if np.array_equal(calib.x[i], held.x[j])}
    assert not pairs and len(calib) + len(held) == 40


def test_too_few_pictures_is_one_clear_error(model_copy, tmp_path, digit_pictures):
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(digit_pictures.rglob("*.png"))[:20]:
        shutil.copy(p, few / p.name)
    with pytest.raises(EdgekitError, match=r"holds 20 readable image.*--min-calib-images.*needs at least 40"):
        int8_from_onnx(model_copy, Int8ExportConfig(calib_data=str(few), latency_rounds=0))
    with pytest.raises(EdgekitError, match="--calib-data replaces --data"):
        Int8ExportConfig(calib_data=str(few), data=str(few)).validate()


def test_a_detector_calibrates_on_letterboxed_pictures_and_scores_boxes_against_fp32(tmp_path, tiny_yolo_dir):
    d = Path(shutil.copytree(tiny_yolo_dir, tmp_path / "det"))
    pics = _detector_pictures(d, tmp_path / "pics")
    m = Manifest.load(d)
    hooks = task_for(m)
    src = m.artifact_path(m.find_artifact("onnxrt", "fp32"))
    calib, tune, held, metric = unlabelled.int8_split(m, hooks, pics, src, n=4, minimum=4, seed=0, n_tune=4)
    first = cv2.imread(str(pics / calib.paths[0]))
    np.testing.assert_array_equal(calib.x[0:1], to_input(letterbox(first, (64, 64))[0]))  # the detector's input
    assert len(held) == len(list(pics.glob("*.jpg"))) - 4
    fp32 = metric(unlabelled.run_onnx(src, held.x, input_name=m.input.name), held.targets)
    assert fp32["metric"] == "mAP50-95_vs_fp32" and fp32["value"] > 0.9  # FP32 against its own boxes
    assert sum(len(t) for t in held.targets) > 0  # FP32 finds boxes: the score means something

    art = int8_from_onnx(d, Int8ExportConfig(calib_data=str(pics), calib_images=4, min_calib_images=4,
                                             latency_rounds=0, allow_over_budget=True, fallback=False))
    assert art.accuracy["metric"] == "mAP50-95_vs_fp32" and art.options["calibration"]["images"] == 4
    assert art.parity["agreement_kind"].startswith("mAP50-95 against the FP32 detections")
    art16 = fp16_from_onnx(d, Fp16ExportConfig(calib_data=str(pics)))
    assert art16.accuracy["metric"] == "mAP50-95_vs_fp32" and art16.accuracy["value"] > 0.9


@pytest.mark.slow
def test_cli_says_it_measured_agreement_not_accuracy(model_copy, digit_pictures):
    r = subprocess.run([sys.executable, "-m", "edgekit", "export", str(model_copy), "--precision", "fp16",
                        "--calib-data", str(digit_pictures)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "40 unlabelled images (no labels: agreement with FP32, not accuracy): top1_vs_fp32" in r.stdout
    r = subprocess.run([sys.executable, "-m", "edgekit", "export", str(model_copy), "--precision", "int8",
                        "--calib-data", str(digit_pictures), "--data", str(digit_pictures)],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 2 and "--calib-data replaces --data" in r.stderr and "Traceback" not in r.stderr
