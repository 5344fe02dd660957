"""edgekit.profile.ultralytics (benchmarks/ultralytics_bench.py, `edgekit bench` of a detector): ultralytics' own benchmark and val beside edgekit's bench on the tiny seeded
YOLOv8n (tests/conftest.py), offline; without ultralytics it records why it skipped that side."""
from __future__ import annotations

import importlib.util
import json

import pytest

from edgekit.profile import ultralytics as ultralytics_bench


@pytest.mark.slow
def test_both_sides_on_the_same_images(tiny_yolo_dir, tmp_path):
    res = ultralytics_bench.run_ultralytics_benchmark(tiny_yolo_dir, None, tmp_path, eval_images=6, iters=5)
    ul, ek = res["ultralytics"], res["edgekit"]
    assert ul["images"] == 6 and [b["format"] for b in ul["benchmark"]] == ["PyTorch", "ONNX"]
    assert all(b["status"] == "✅" and b["inference_ms_per_image"] > 0 for b in ul["benchmark"])
    for name in ("PyTorch", "ONNX"):
        assert set(ul["val"][name]["speed_ms_per_image"]) >= {"preprocess", "inference", "postprocess"}
    for backend in ("torch", "onnxrt"):
        assert ek[backend]["status"] == "ok" and ek[backend]["images"] == 6
        assert ek[backend]["inference_ms"]["p50_ms"] > 0 and ek[backend]["end_to_end_ms"]["p50_ms"] > 0
    # the same model on the same six images: edgekit's numpy mAP follows ultralytics' val
    assert ek["onnxrt"]["mAP50-95"] == pytest.approx(ul["val"]["ONNX"]["mAP50-95"], abs=0.02)
    assert json.loads((tmp_path / "ultralytics_vs_edgekit.json").read_text())["eval_images"] == 6
    md = (tmp_path / "ultralytics_vs_edgekit.md").read_text()
    assert "| ultralytics benchmark() | ONNX" in md and "| edgekit bench | onnxrt |" in md
    assert not (tiny_yolo_dir / "benchmarks.log").exists() and not list(tiny_yolo_dir.glob("*_openvino*"))


def test_without_ultralytics_the_reason_is_recorded(tiny_yolo_dir, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ultralytics" else real(name, *a))
    res = ultralytics_bench.run_ultralytics_benchmark(tiny_yolo_dir, None, tmp_path, eval_images=2, iters=3)
    assert "not installed" in res["ultralytics"]["skipped"]
    assert res["edgekit"]["onnxrt"]["status"] == "ok"  # edgekit's side still measured
    assert "ultralytics: skipped" in (tmp_path / "ultralytics_vs_edgekit.md").read_text()
