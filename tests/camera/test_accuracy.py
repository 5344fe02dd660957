"""End-to-end digit accuracy of the camera loop against per-frame ground truth, and the same-results check
between two runs: exact numbers on crafted frames, then the loop and the CLI with a real model."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.camera.accuracy import _boxes, box_iou, digit_accuracy, load_truth, match_truth, same_results
from edgekit.camera.loop import CameraConfig, run_camera
from edgekit.cli import main
from edgekit.errors import EdgekitError

A, B, C = [10, 10, 30, 40], [50, 10, 70, 40], [90, 10, 110, 40]  # 20x30 boxes, far apart


def det(box, label, score=0.9, det_class="digit"):
    return {"box": [float(v) for v in box], "det_class": det_class, "det_score": score, "label": label}


def shifted(box, dx):
    return [box[0] + dx, box[1], box[2] + dx, box[3]]


TRUTH = [
    {"frame": 0, "objects": [{"id": 0, "digit": 3, "box": A}, {"id": 1, "digit": 7, "box": B},
                             {"id": 2, "digit": 1, "box": C}]},
    {"frame": 1, "objects": [{"id": 0, "digit": 3, "box": A}, {"id": 1, "digit": 7, "box": B}]},
]


def test_box_iou():
    m = box_iou(_boxes([A, A]), _boxes([A, shifted(A, 10), shifted(A, 40)]))
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m[0], [1.0, 1 / 3, 0.0])  # half the width overlaps: 300 / (600 + 600 - 300)
    assert box_iou(_boxes([]), _boxes([A])).shape == (0, 1)


def test_accuracy_counts_misses_wrong_labels_false_positives_and_low_iou():
    results = [
        {"frame": 0, "objects": [det(A, "3"),                    # found, right
                                 det(B, "1"),                    # found, wrong label
                                 det([200, 0, 220, 30], "5")]},  # C missed; a false positive instead
        {"frame": 1, "objects": [det(shifted(A, 10), "3"),       # IoU 1/3 < 0.5: not found, and a false positive
                                 det(B, "7")]},                  # found, right
    ]
    a = digit_accuracy(results, TRUTH)
    assert (a["digits"], a["found"], a["correct"], a["false_positives"]) == (5, 3, 2, 2)
    assert a["accuracy"] == 0.4 and a["recall"] == 0.6 and a["classification_accuracy"] == pytest.approx(2 / 3, 1e-5)
    assert a["frames"] == 2 and a["frames_without_truth"] == 0 and a["truth_frames_not_run"] == 0
    assert a["objects"]["1"] == {"digit": 7, "frames": 2, "found": 2, "correct": 1, "called": {"1": 1, "7": 1}}
    assert a["objects"]["2"]["found"] == 0
    assert digit_accuracy(results, TRUTH, iou=0.3)["correct"] == 3  # the shifted box counts at a lower IoU


def test_one_detection_per_digit_the_most_confident_first():
    dup = [det(shifted(A, 1), "8", score=0.5), det(A, "3", score=0.95)]
    assert match_truth(dup, TRUTH[0]["objects"][:1]) == [(1, 0, 1.0)]
    a = digit_accuracy([{"frame": 1, "objects": dup}], TRUTH)
    assert (a["found"], a["correct"], a["false_positives"]) == (1, 1, 1)  # the duplicate is a false positive
    low_first = [det(shifted(A, 1), "8", score=0.99), det(A, "3", score=0.5)]
    assert digit_accuracy([{"frame": 1, "objects": low_first}], TRUTH)["correct"] == 0  # it took the digit


def test_detector_class_is_the_label_without_a_classifier_and_frames_outside_the_truth():
    results = [{"frame": 1, "objects": [{"box": A, "det_class": "3", "det_score": 0.8}]},
               {"frame": 7, "objects": [{"box": A, "det_class": "3", "det_score": 0.8}]}]
    a = digit_accuracy(results, TRUTH, per_frame=True)
    assert (a["digits"], a["correct"], a["frames"]) == (2, 1, 1)  # only frame 1 is scored
    assert a["frames_without_truth"] == 1 and a["truth_frames_not_run"] == 1
    assert a["per_frame"] == [{"frame": 1, "digits": 2, "found": 1, "correct": 1, "false_positives": 0}]
    assert digit_accuracy([], TRUTH)["accuracy"] is None


def test_same_results_needs_same_counts_labels_and_boxes():
    run = [{"frame": 0, "objects": [det(A, "3"), det(B, "7")]}, {"frame": 1, "objects": []}]
    swapped = [{"frame": 0, "objects": [det(shifted(B, 0.05), "7"), det(A, "3")]}, {"frame": 1, "objects": []}]
    s = same_results(run, swapped)
    assert s["same"] and s["frames"] == 2 and s["objects"] == 2 and 0.99 < s["min_iou"] < 1
    moved = [{"frame": 0, "objects": [det(A, "3"), det(shifted(B, 0.5), "7")]}, {"frame": 1, "objects": []}]
    assert not same_results(run, moved)["same"]  # IoU 0.95
    relabelled = [{"frame": 0, "objects": [det(A, "3"), det(B, "1")]}, {"frame": 1, "objects": []}]
    r = same_results(run, relabelled)
    assert not r["same"] and r["differing_frames"] == 1 and "label 7 vs 1" in r["first_difference"]["why"]
    extra = [{"frame": 0, "objects": [det(A, "3"), det(B, "7")]}, {"frame": 1, "objects": [det(C, "1")]}]
    assert same_results(run, extra)["first_difference"] == {"frame": 1, "why": "0 objects vs 1"}
    assert not same_results(run, run[:1])["same"]  # a frame only one run has


def test_load_truth_reads_a_file_or_a_digits_detect_folder(tmp_path):
    (tmp_path / "video").mkdir()
    (tmp_path / "video" / "digits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRUTH))
    assert load_truth(tmp_path) == load_truth(tmp_path / "video" / "digits.jsonl") == TRUTH
    with pytest.raises(EdgekitError, match="does not exist"):
        load_truth(tmp_path / "nope.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"frame": 0, "objects": [{"box": [0, 0, 1, 1]}]}\n')
    with pytest.raises(EdgekitError, match="need 'digit' and 'box'"):
        load_truth(tmp_path / "bad.jsonl")


# ---- the loop with a real model --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def video_and_truth(tmp_path_factory, mnist5k) -> tuple[Path, Path]:
    """12 frames, one real MNIST digit (0-2, what the fixture classifier knows) filling each; the truth is the
    whole frame with that digit, except frame 5, whose truth says another digit (so it is never right)."""
    images, labels = mnist5k
    idx = np.random.default_rng(4).choice(np.flatnonzero(labels <= 2), 12, replace=False)
    root = tmp_path_factory.mktemp("acc")
    w = cv2.VideoWriter(str(root / "d.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 96))
    rows = []
    for f, i in enumerate(idx):
        w.write(cv2.cvtColor(cv2.resize(images[i], (96, 96)), cv2.COLOR_GRAY2BGR))
        digit = int(labels[i]) if f != 5 else 9
        rows.append(json.dumps({"frame": f, "objects": [{"id": 0, "digit": digit, "box": [0, 0, 96, 96]}]}))
    w.release()
    (root / "truth.jsonl").write_text("\n".join(rows) + "\n")
    return root / "d.avi", root / "truth.jsonl"


def test_the_loop_reports_accuracy_of_its_own_results(video_and_truth, model_dir, tmp_path):
    video, truth = video_and_truth
    r = run_camera(CameraConfig(input=str(video), output=[str(tmp_path / "r.jsonl")], classifier=str(model_dir),
                                truth=str(truth), report=str(tmp_path / "rep.json"), threads=1))
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    want = sum(row["objects"][0]["label"] == str(t["objects"][0]["digit"]) for row, t in zip(rows, load_truth(truth)))
    a = r["accuracy"]
    assert (a["digits"], a["found"], a["frames"], a["correct"]) == (12, 12, 12, want) and want <= 11
    assert json.loads((tmp_path / "rep.json").read_text())["accuracy"] == a
    assert digit_accuracy(rows, load_truth(truth)) == a  # the results file scores the same
    assert same_results(rows, rows)["same"]


def test_cli_prints_accuracy_and_a_bad_truth_path_fails_before_the_models_load(video_and_truth, model_dir,
                                                                             tmp_path, capsys):
    video, truth = video_and_truth
    assert main(["camera", str(video), "--classifier", str(model_dir), "--truth", str(truth), "--headless",
                 "--threads", "1", "--max-frames", "4"]) == 0
    out = capsys.readouterr().out
    assert "digit accuracy" in out and "in 4 frames" in out and "detection recall 100.0%" in out
    with pytest.raises(SystemExit) as e:  # refused as the options are read, before a model loads
        main(["camera", str(video), "--classifier", str(model_dir), "--truth", str(tmp_path / "missing.jsonl")])
    assert e.value.code == 2 and "missing.jsonl does not exist" in capsys.readouterr().err


def test_same_as_compares_a_run_with_another_backends_results(video_and_truth, model_dir, tmp_path, capsys):
    """--same-as: the tinygrad backend's run gives the same results as ONNX Runtime's on the same video; a
    reference changed in one frame is reported as different, at that frame."""
    video, _ = video_and_truth
    ort = tmp_path / "ort.jsonl"
    run_camera(CameraConfig(input=str(video), output=[str(ort)], classifier=str(model_dir), threads=1))
    assert main(["camera", str(video), "--classifier", str(model_dir), "--cls-backend", "tinygrad", "--same-as",
                 str(ort), "--headless", "--report", str(tmp_path / "tg.json")]) == 0
    assert "results the same as" in capsys.readouterr().out
    m = json.loads((tmp_path / "tg.json").read_text())["same_as"]
    assert m["same"] and m["frames"] == 12 and m["objects"] == 12 and m["differing_frames"] == 0
    rows = [json.loads(line) for line in ort.read_text().splitlines()]
    rows[7]["objects"][0]["label"] = "9"
    changed = tmp_path / "changed.jsonl"
    changed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = run_camera(CameraConfig(input=str(video), classifier=str(model_dir), threads=1, same_as=str(changed),
                                max_frames=10))
    assert not r["same_as"]["same"] and r["same_as"]["frames"] == 10  # only the frames this run processed
    assert r["same_as"]["differing_frames"] == 1 and r["same_as"]["first_difference"]["frame"] == 7
