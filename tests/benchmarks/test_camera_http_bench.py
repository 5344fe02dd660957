"""benchmarks/camera_http.py end to end on a tiny real model and a short real video: every variant runs, the
viewers' process connects (3 readers get frames, 1 stalls) and the ratio is reported (no timing asserted)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_http_benchmark_end_to_end(model_dir, tmp_path):
    bench = _load("camera_http")
    video = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(40):
        w.write(rng.integers(0, 255, (120, 160, 3), np.uint8))
    w.release()
    out = tmp_path / "http.json"
    args = bench.get_args_parser().parse_args(["--video", str(video), "--classifier", str(model_dir), "--rounds",
                                               "1", "--warmup", "3", "--out", str(out)])
    assert bench.main(args) == 0
    rep = json.loads(out.read_text())
    assert set(rep["fps_median"]) == set(bench.VARIANTS) and all(v > 0 for v in rep["fps_median"].values())
    assert len(rep["fps_ratio_per_round"]) == 1 and rep["fps_ratio_4viewers_vs_none_median"] > 0
    viewers = rep["runs"]["http_4viewers"][0]["viewers"]
    assert len(viewers["frames_per_reader"]) == 3 and min(viewers["frames_per_reader"]) > 0
    assert viewers["most_viewers_at_once"] == 4  # the stalled one was admitted too
    assert rep["runs"]["http_idle"][0]["viewers"] is None and rep["per_frame"]["none"]["frame_ms"]["n"] == 37
