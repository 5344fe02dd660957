"""benchmarks/camera_vs_ultralytics.py end to end on a tiny real YOLO and a short real video: both sides run the
same ONNX file in their own processes, interleaved, and find the same objects (no timing asserted)."""
from __future__ import annotations

import json

import pytest

from repo_files import load_script, write_noise_video

bench = load_script("benchmarks", "camera_vs_ultralytics")


@pytest.mark.slow
def test_both_sides_run_the_same_onnx_on_the_same_video(tiny_yolo_dir, tmp_path):
    video = write_noise_video(tmp_path / "v.avi", 8, (96, 80))
    out = tmp_path / "r.json"
    args = bench.get_args_parser().parse_args(["--video", str(video), "--model-dir", str(tiny_yolo_dir), "--frames",
                                               "6", "--warmup", "1", "--rounds", "1", "--out", str(out)])
    assert bench.main(args) == 0
    rep = json.loads(out.read_text())
    e, u = rep["runs"]["edgekit"][0], rep["runs"]["ultralytics"][0]
    assert e["frames"] == u["frames"] == 6 and e["fps"] > 0 and u["fps"] > 0
    assert e["objects_mean"] == u["objects_mean"]  # same file, same thresholds: the same detections per frame
    assert e["threads"]["overlap"] is True and e["threads"]["detector"]["spin"] is False
    assert rep["fps_ratio_per_round"] and rep["median"]["edgekit"]["peak_rss_mb"] > 0 and rep["machine"]["cpu"]
