"""benchmarks/camera_http.py end to end on a tiny real model and a short real video: every variant runs, the
viewers' process connects (3 readers get frames, 1 stalls) and the ratio is reported (no timing asserted)."""
from __future__ import annotations

import json

from repo_files import load_script, write_noise_video



def _load(name: str):
    return load_script("benchmarks", name)


def test_http_benchmark_end_to_end(model_dir, tmp_path):
    bench = _load("camera_http")
    video = write_noise_video(tmp_path / "v.avi", 40, (160, 120))
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
