"""edgekit bench/compare on a detector (the tiny seeded YOLOv8n of tests/conftest.py, 64x64, 8 held-out images):
accuracy is mAP50-95 / mAP50 on the held-out split, exactly what edgekit.vision.map.detection_metric gives
for the same outputs; parity is box agreement next to the raw outputs' max error; end-to-end (letterbox +
infer + decode/NMS) is reported apart from inference, per stage; the report labels all of it as detection."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.manifest import Manifest
from edgekit.profile import report as report_mod
from edgekit.profile.matrix import BenchConfig, run_matrix
from edgekit.profile.report import write_report

REPO = Path(__file__).resolve().parents[2]


def _cfg(model_dir, **kw) -> BenchConfig:
    base = dict(model_dir=str(model_dir), backends="torch,onnxrt", precisions="fp32,int8", warmup=1, iters=5,
                eval_images=0, threads=1, reference="onnxrt")
    base.update(kw)
    return BenchConfig(**base)


@pytest.fixture(scope="module")
def report(tiny_yolo_dir) -> dict:
    return run_matrix(_cfg(tiny_yolo_dir))


def _row(report, backend, precision="fp32", batch=1):
    return next(r for r in report["results"]
                if (r["backend"], r["precision"], r["batch"]) == (backend, precision, batch))


def test_accuracy_is_the_map_of_the_held_out_split(report, tiny_yolo_dir):
    from edgekit.data.yolo import detection_inputs
    from edgekit.export.accuracy import run_onnx
    from edgekit.vision.map import detection_metric

    held = detection_inputs(Manifest.load(tiny_yolo_dir), split="val")
    want = detection_metric(run_onnx(tiny_yolo_dir / "model.onnx", held.x, input_name="images", threads=1),
                            held.targets)
    acc = _row(report, "onnxrt")["accuracy"]
    assert acc["metric"] == "mAP50-95" and acc["n"] == len(held) == 8 and acc["instances"] == want["instances"] > 0
    assert acc["value"] == want["value"] and acc["mAP50"] == want["mAP50"]
    assert 0 < acc["value"] < acc["mAP50"] < 1  # neither trivial score: the fixture's labels make sure
    assert report["task"] == "detect" and report["metric"] == "mAP50-95"


def test_onnxrt_against_itself_agrees_fully(report):
    p = _row(report, "onnxrt")["parity"]
    assert p["reference"] == "onnxrt/fp32" and p["max_abs"] == 0.0
    assert p["detections_agreement"] == 1.0 and p["min_box_iou"] == 1.0
    assert p["agreement"] >= 0.99  # mAP of its own detections: 0.995 at most (101-point AP, ultralytics' sentinels)
    assert "top1_agreement" not in p  # argmax over a flattened YOLO head means nothing


def test_torch_against_the_onnx_reference(report):
    t, o = _row(report, "torch"), _row(report, "onnxrt")
    assert t["status"] == "ok", t
    p = t["parity"]
    assert p["max_rel"] <= 1e-4 and p["detections_agreement"] == 1.0 and p["min_box_iou"] >= 0.99
    assert t["accuracy"]["value"] == pytest.approx(o["accuracy"]["value"], abs=0.01)


def test_end_to_end_is_apart_from_inference_and_timed_per_stage(report):
    for backend in ("torch", "onnxrt"):
        r = _row(report, backend)
        e2e, inf = r["end_to_end_ms"], r["latency_ms"]
        assert e2e["n"] == 3 * 8 and inf["n"] >= 5  # 8 decoded val images, 3 passes; inference timed apart
        stages = e2e["stages_p50_ms"]
        assert set(stages) == {"preprocess", "infer", "postprocess"} and min(stages.values()) > 0
        assert e2e["p50_ms"] >= stages["infer"]  # every sample's total holds its inference
    assert "int8" in _row(report, "onnxrt", "int8")["reason"]


def test_report_is_labelled_for_detection(report, tmp_path, monkeypatch):
    drawn = {}
    save = report_mod._save

    def record(fig, dest, plt):
        ax = fig.axes[0]
        drawn[dest.name] = {"ylabel": ax.get_ylabel(), "title": ax.get_title(),
                            "legend": [t.get_text() for t in (ax.get_legend().get_texts() if ax.get_legend() else [])]}
        save(fig, dest, plt)

    monkeypatch.setattr(report_mod, "_save", record)
    text = write_report(report, tmp_path).read_text()
    header = next(line for line in text.splitlines() if line.startswith("| backend | precision | batch"))
    assert "| mAP50-95 | mAP50 | max_rel_err | box_agreement | min_box_iou | mAP_vs_ref |" in header
    assert "top1" not in header and "top-1" not in text
    assert "held-out mAP50-95 on 8 images" in text and "decode + NMS" in text
    assert "| backend | precision | preprocess | infer | postprocess |" in text  # the end-to-end stages table
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    onnx = next(r for r in rows if r["backend"] == "onnxrt" and r["precision"] == "fp32")
    assert float(onnx["mAP50-95"]) == _row(report, "onnxrt")["accuracy"]["value"] and onnx["box_agreement"] == "1.0"
    assert drawn["accuracy_latency.png"]["ylabel"] == "held-out mAP50-95, %"
    assert drawn["accuracy_latency.png"]["title"].startswith("mAP50-95 on 8 held-out images")
    assert "end-to-end p50" in drawn["latency.png"]["legend"]
    assert json.loads((tmp_path / "bench.json").read_text())["results"][0]["accuracy"]["metric"] == "mAP50-95"


def test_an_ultralytics_checkpoint_as_torch_artifact_is_explained(tiny_yolo_dir, tmp_path):
    d = Path(shutil.copytree(tiny_yolo_dir, tmp_path / "old"))
    m = Manifest.load(d)
    m.add_artifact("torch", "model.pt", "fp32")  # a directory from before the weights-only file
    m.save()
    rep = run_matrix(_cfg(d, backends="torch", precisions="fp32", eval_images=2))
    r = _row(rep, "torch")
    assert r["status"] == "skipped" and "python -m edgekit.train.detect" in r["reason"]


def test_without_the_dataset_it_times_on_random_inputs(tiny_yolo_dir, tmp_path):
    d = Path(shutil.copytree(tiny_yolo_dir, tmp_path / "nodata"))
    m = Manifest.load(d)
    m.source["dataset"] = {"yaml": str(tmp_path / "gone.yaml")}
    m.save()
    rep = run_matrix(_cfg(d, backends="onnxrt", precisions="fp32"))
    r = _row(rep, "onnxrt")
    assert r["status"] == "ok" and "accuracy" not in r and "end_to_end_ms" not in r
    assert r["parity"]["detections_agreement"] == 1.0


@pytest.mark.slow
def test_compare_cli_labels_detection(tiny_yolo_dir):
    r = subprocess.run([sys.executable, "-m", "edgekit", "compare", str(tiny_yolo_dir), "--backends", "torch,onnxrt",
                        "--precisions", "fp32", "--eval-images", "4"], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| box agreement | mAP50-95 |" in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.startswith("| onnxrt | fp32"))
    assert line.split("|")[6].strip() == "100.00%"  # box agreement against the torch reference


def test_classifier_report_keeps_top1_labels(tmp_path, monkeypatch):
    """The same report code on a classifier's results: top-1 columns and axis, no detection columns."""
    drawn = {}
    save = report_mod._save
    def record(fig, dest, plt):
        drawn[dest.name] = fig.axes[0].get_ylabel()
        save(fig, dest, plt)

    monkeypatch.setattr(report_mod, "_save", record)
    lat = {"p50_ms": 1.0, "p90_ms": 1.2, "p99_ms": 1.5, "mean_ms": 1.1, "std_ms": 0.1, "n": 10}
    rep = {"model_dir": "m", "task": "classify", "created": "now", "machine": {"cpu": {"name": "cpu", "cores": 2}},
           "results": [{"backend": "onnxrt", "precision": "fp32", "batch": 1, "status": "ok", "latency_ms": lat,
                        "peak_rss_mb": 50.0, "accuracy": {"metric": "top1", "value": 0.9, "n": 24},
                        "parity": {"reference": "onnxrt/fp32", "max_rel": 0.0, "top1_agreement": 1.0}}]}
    text = write_report(rep, tmp_path).read_text()
    assert "| top1 | max_rel_err | top1_agreement |" in text and "mAP" not in text
    assert drawn["accuracy_latency.png"] == "held-out top-1, %"
    assert np.isclose(float(next(csv.DictReader((tmp_path / "bench.csv").open()))["top1"]), 0.9)
