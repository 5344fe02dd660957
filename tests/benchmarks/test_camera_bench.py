"""The camera benchmarks' logic: overhead arithmetic on crafted per-frame records, VmHWM parsing, the RSS
ratio summary; then both scripts end to end on tiny real models (no timing is asserted)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from repo_files import load_script


def _load(name: str):
    return load_script("benchmarks", name)


overhead = _load("camera_overhead")
rss = _load("camera_rss")


def _record(i: int, frame: int, det: int, cls: int, stages: dict[str, int], objects: int = 2) -> dict:
    return {"frame": i, "objects": objects, "frame_ns": frame, "det_infer_ns": det, "cls_infer_ns": cls,
            "stages_ns": {**stages, "frame": frame, "overhead": frame - det - cls}}


def test_overhead_is_frame_minus_both_models_after_warmup():
    recs = [_record(0, 99_000_000, 1, 1, {"capture": 5})]  # warm-up: dropped
    recs += [_record(i, 10_000_000 + i * 1_000, 8_000_000, 1_000_000,
                     {"capture": 700_000, "preprocess": 200_000, "detect": 8_050_000, "postprocess": 300_000,
                      "classify_pre": 100_000, "classify": 1_020_000, "draw": 50_000, "write": 30_000})
             for i in range(1, 4)]
    rows = overhead.frame_rows(recs, warmup=1)
    assert [r["frame"] for r in rows] == [1, 2, 3]
    r = rows[0]
    assert r["overhead_ns"] == 10_001_000 - 9_000_000
    st = r["stages_ns"]
    assert st["detect_minus_infer"] == 50_000 and st["classify_minus_infer"] == 20_000
    assert "frame" not in st and "overhead" not in st
    # frame time in no stage; capture (decode) is outside the frame clock
    assert st["untimed"] == 10_001_000 - (200_000 + 8_050_000 + 300_000 + 100_000 + 1_020_000 + 50_000 + 30_000)

    s = overhead.summarize(rows)
    assert s["overhead_ms"]["n"] == 3 and s["overhead_ms"]["p50_ms"] == pytest.approx(1.002)
    assert s["infer_ms"]["p50_ms"] == pytest.approx(9.0) and s["det_infer_ms"]["p50_ms"] == pytest.approx(8.0)
    assert s["stages_p50_ms"]["capture"] == pytest.approx(0.7)
    assert s["objects_mean"] == 2
    # the parts of a frame that are not inference add up to its overhead: here every frame has the same parts
    assert s["overhead_from_stage_p50s_ms"] == pytest.approx(s["overhead_ms"]["p50_ms"])


def test_stages_a_frame_did_not_run_count_only_where_they_ran():
    """Frames without detections skip the classifier: its stages' medians are over the frames that had them."""
    recs = [_record(0, 5_000_000, 4_000_000, 0, {"preprocess": 100_000, "detect": 4_010_000}, objects=0),
            _record(1, 7_000_000, 4_000_000, 2_000_000,
                    {"preprocess": 100_000, "detect": 4_010_000, "classify_pre": 300_000, "classify": 2_100_000}),
            _record(2, 7_000_000, 4_000_000, 2_000_000,
                    {"preprocess": 100_000, "detect": 4_010_000, "classify_pre": 500_000, "classify": 2_100_000})]
    s = overhead.summarize(overhead.frame_rows(recs, warmup=0))
    assert s["stages_n"]["preprocess"] == 3 and s["stages_n"]["classify_pre"] == 2
    assert s["stages_p50_ms"]["classify_pre"] == pytest.approx(0.4)
    assert s["overhead_ms"]["p50_ms"] == pytest.approx(1.0)
    assert s["cls_infer_ms"]["p50_ms"] == pytest.approx(2.0)


def test_per_object_fit_splits_overhead_into_a_frame_part_and_a_part_per_object():
    """Crafted frames whose overhead is exactly 0.5 ms + 0.25 ms per object: the fit finds both, and the floor
    (2 ms) holds up to 6 objects. Frames that all have one count give no fit."""
    recs = [_record(i, 10_000_000 + 500_000 + 250_000 * k, 8_000_000, 2_000_000, {"detect": 8_000_000}, objects=k)
            for i, k in enumerate([0, 2, 4, 6, 8, 10] * 5)]
    fit = overhead.summarize(overhead.frame_rows(recs, warmup=0))["per_object"]
    assert fit["fixed_ms"] == pytest.approx(0.5) and fit["per_object_ms"] == pytest.approx(0.25)
    assert fit["objects_within_floor"] == 6
    assert fit["overhead_p50_by_objects_ms"] == {k: pytest.approx(0.5 + 0.25 * k) for k in (0, 2, 4, 6, 8, 10)}
    same = [_record(i, 11_000_000, 8_000_000, 2_000_000, {"detect": 8_000_000}, objects=3) for i in range(6)]
    assert overhead.summarize(overhead.frame_rows(same, warmup=0))["per_object"] is None


def test_vmhwm_parsing():
    status = "Name:\tpython\nVmPeak:\t  900000 kB\nVmHWM:\t  215040 kB\nVmRSS:\t  200000 kB\n"
    assert rss.vmhwm_mb(status) == 210.0
    with pytest.raises(ValueError, match="no VmHWM"):
        rss.vmhwm_mb("Name:\tpython\nVmRSS:\t 1 kB\n")
    with pytest.raises(ValueError, match="unexpected"):
        rss.vmhwm_mb("VmHWM:\t 12 MB\n")
    from edgekit.profile.memory import peak_rss_mb

    proc = Path("/proc/self/status")
    if proc.exists():  # Linux: the same number edgekit's own helper reads
        assert rss.vmhwm_mb(proc.read_text()) == pytest.approx(peak_rss_mb(), abs=1.0)


def test_rss_ratio_is_per_round_with_median_and_spread():
    runs = [{"side": side, "round": rnd, "peak_rss_mb": mb} for side, rnd, mb in
            [("edgekit", 0, 200.0), ("ultralytics", 0, 800.0), ("ultralytics", 1, 500.0), ("edgekit", 1, 250.0),
             ("edgekit", 2, 210.0), ("ultralytics", 2, 700.0)]]
    s = rss.summarize(runs)
    assert s["edgekit_peak_rss_mb"]["median"] == 210.0 and s["ultralytics_peak_rss_mb"]["max"] == 800.0
    assert s["ratio"]["values"] == [0.25, 0.5, 0.3]
    assert s["ratio"]["median"] == 0.3 and s["ratio"]["min"] == 0.25 and s["ratio"]["max"] == 0.5
    assert s["ratio_of_medians"] == pytest.approx(210 / 700, abs=1e-4)
    assert "ratio" not in rss.summarize(runs[:1])  # a side with no run: no ratio


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory, mnist5k) -> Path:
    """12 frames, 128x96, two real MNIST digits on each."""
    images, _ = mnist5k
    path = tmp_path_factory.mktemp("video") / "digits.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for i in range(12):
        f = np.full((96, 128, 3), 40, np.uint8)
        f[10:42, 10 + i:42 + i] = cv2.cvtColor(cv2.resize(images[2 * i], (32, 32)), cv2.COLOR_GRAY2BGR)
        f[50:82, 80:112] = cv2.cvtColor(cv2.resize(images[2 * i + 1], (32, 32)), cv2.COLOR_GRAY2BGR)
        w.write(f)
    w.release()
    return path


def test_overhead_benchmark_end_to_end(tiny_video, tiny_yolo_dir, model_dir, tmp_path):
    out = tmp_path / "camera_overhead.json"
    args = overhead.get_args_parser().parse_args(
        ["--video", str(tiny_video), "--detector", str(tiny_yolo_dir), "--classifier", str(model_dir), "--rounds", "2",
         "--warmup", "2", "--variants", "bare,video+draw,bare+track+lines,http+viewer", "--out", str(out)])
    assert overhead.main(args) == 0
    rep = json.loads(out.read_text())
    assert set(rep["results"]) == {"bare", "video+draw", "bare+track+lines", "http+viewer"}
    # the tracker's time is a stage of its own, inside the overhead, only where --track is on
    assert [("track" in r["stages_p50_ms"]) for r in rep["results"].values()] == [False, False, True, False]
    # the live view's viewer (another process) was watching: it got JPEG parts of the stream in every run
    assert all(run["viewer"]["parts"] >= 1 for run in rep["results"]["http+viewer"]["runs"])
    assert all(run["viewer"] is None for run in rep["results"]["bare"]["runs"])
    for v, r in rep["results"].items():
        assert r["overhead_ms"]["n"] == 2 * (12 - 2)  # 2 rounds, warm-up dropped from each
        assert [run["frames"] for run in r["runs"]] == [12, 12]
        assert r["overhead_ms"]["p50_ms"] <= r["frame_ms"]["p50_ms"]
        assert {"preprocess", "detect", "postprocess", "write", "untimed"} <= set(r["stages_p50_ms"])
    # the overlays are drawn on the video writer's thread, not in the loop; the bare loop draws nothing
    assert all(run["draw_on_writer_thread_p50_ms"] > 0 for run in rep["results"]["video+draw"]["runs"])
    assert all(run["draw_on_writer_thread_p50_ms"] is None for run in rep["results"]["bare"]["runs"])
    assert all("draw" not in r["stages_p50_ms"] for r in rep["results"].values())
    assert all("queued" not in r["stages_p50_ms"] and "latency" not in r["stages_p50_ms"]  # waits, not work
               for r in rep["results"].values())
    assert rep["results_identical_across_runs"]  # the jsonl of every run that wrote one
    assert rep["machine"]["cpu"] and len(rep["loadavg_before"]) == 3


def test_overhead_benchmark_names_a_missing_model(tmp_path, capsys):
    args = overhead.get_args_parser().parse_args(["--video", str(tmp_path / "nope.mp4"),
                                                  "--out", str(tmp_path / "o.json")])
    assert overhead.main(args) == 2
    assert "--video" in capsys.readouterr().err and not (tmp_path / "o.json").exists()


@pytest.mark.slow
def test_rss_benchmark_end_to_end(tiny_video, tiny_yolo_dir, tmp_path):
    out = tmp_path / "camera_rss.json"
    args = rss.get_args_parser().parse_args(["--video", str(tiny_video), "--detector", str(tiny_yolo_dir),
                                            "--rounds", "1", "--timeout", "300", "--out", str(out)])
    assert rss.main(args) == 0
    rep = json.loads(out.read_text())
    assert rep["frames"] == {"edgekit": [12], "ultralytics": [12]} and rep["same_frames"]
    assert rep["edgekit_imported_torch"] is False
    assert {r["side"]: r["torch_imported"] for r in rep["runs"]} == {"edgekit": False, "ultralytics": True}
    assert rep["ratio"]["n"] == 1 and 0 < rep["ratio"]["median"] < 1
