#!/usr/bin/env python3
"""Tracking quality of `edgekit camera --track` on the digits-detect test video (ground truth per frame).

    python benchmarks/tracking_quality.py                      # writes benchmarks/results/tracking_quality.json
    python benchmarks/tracking_quality.py --detector runs/demo/models/digit_detector   # and a real detector's run

Per ground-truth digit: whether it kept one track id for its whole appearance (one id, no other digit's, matched
in at least half its frames); ID switches; MOTA, MOTP and IDF1 by py-motmetrics (edgekit.camera.track_eval).

The tracker is measured on detections made from the ground truth (edgekit.camera.track_eval.simulated_detections:
boxes jittered, some missed, false boxes added; several settings, several seeds), so the figures are the
tracker's and not a detector's; with --detector, the same video also goes through the real loop
(run_camera --track) and its records are scored, with the detector's own recall beside them. Also timed: one
Tracker.update per frame, alone and with a line and a zone (the loop's `track` stage). The video is made when
--video-dir has none (edgekit data digits-detect, 300 frames at 640x480, about 10 s).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SETTINGS = {  # name: simulated_detections(jitter, miss, false_per_frame)
    "exact": (0.0, 0.0, 0.0),
    "jitter5": (0.05, 0.0, 0.0),
    "jitter5_miss10_false0.5": (0.05, 0.1, 0.5),  # the setting tests/camera/test_tracking.py holds a floor on
    "jitter10_miss20_false1": (0.10, 0.2, 1.0),
}
# The floor stated for the full video in the test's setting, from the figures measured here (seeds 0-4): the
# test holds its own, measured on its short clip.
FLOOR = {"setting": "jitter5_miss10_false0.5", "kept_one_id_fraction": 0.8, "mota": 0.8, "idf1": 0.8}
FIGURES = ("kept_one_id_fraction", "id_switches", "ids_on_several_objects", "matched_fraction")
MOT = ("mota", "motp", "idf1", "num_fragmentations", "num_false_positives", "num_misses")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video-dir", default="runs/tracking_quality/video",
                   help="a digits-detect video folder (digits.mp4 + digits.jsonl); made if missing (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=5, help="seeds per simulated setting (default: %(default)s)")
    p.add_argument("--detector", default="", help="also run the real loop with this YOLO model directory")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the detector's runner")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tracking_quality.json"))
    return p


def ensure_video(video_dir: Path) -> Path:
    if (video_dir / "digits.jsonl").exists():
        return video_dir
    from edgekit.data.digits_detect import DigitsDetectConfig, write_digits_detect

    print(f"making the digits-detect video in {video_dir.parent} ...", flush=True)
    write_digits_detect(DigitsDetectConfig(out=str(video_dir.parent), train=2, val=2, crops=0, crop_images=0))
    return video_dir


def track(dets: list[dict[str, Any]], fps: float, lines=(), zones=()) -> list[int]:
    """Run the tracker over the detections (setting each track_id); per-frame update times (ns)."""
    from edgekit.camera.tracking import Tracker

    t, times = Tracker(list(lines), list(zones), fps=fps), []
    for r in dets:
        t0 = time.perf_counter_ns()
        t.update(r["objects"])
        times.append(time.perf_counter_ns() - t0)
    return times


def pick(q: dict[str, Any]) -> dict[str, Any]:
    return {**{k: q[k] for k in FIGURES}, **{k: q["motmetrics"][k] for k in MOT}}


def simulated(truth, size, fps, seeds: int) -> dict[str, Any]:
    from edgekit.camera.track_eval import simulated_detections, track_quality

    out = {}
    for name, (jitter, miss, false) in SETTINGS.items():
        runs = []
        for seed in range(seeds):
            dets = simulated_detections(truth, seed, jitter, miss, false, size)
            track(dets, fps)
            runs.append({"seed": seed, **pick(track_quality(dets, truth))})
        out[name] = {"jitter": jitter, "miss": miss, "false_per_frame": false,
                     "min": {k: min(r[k] for r in runs) for k in runs[0] if k != "seed"},
                     "max": {k: max(r[k] for r in runs) for k in runs[0] if k != "seed"}, "runs": runs}
        lo = out[name]["min"]
        print(f"{name:<24} kept one id >= {lo['kept_one_id_fraction']:.3f}, switches <= "
              f"{out[name]['max']['id_switches']}, MOTA >= {lo['mota']:.3f}, IDF1 >= {lo['idf1']:.3f} "
              f"({seeds} seeds)", flush=True)
    return out


def timing(truth, size, fps) -> dict[str, Any]:
    """Tracker.update per frame (ms) in the test's setting, alone and with one line and one zone."""
    from edgekit.camera.track_eval import simulated_detections
    from edgekit.profile.timer import LatencyStats

    dets = simulated_detections(truth, 0, *SETTINGS[FLOOR["setting"]], size)
    w, h = size
    out = {}
    for name, lines, zones in (("track", (), ()), ("track+line+zone", (f"0,{h // 2},{w},{h // 2}",),
                                                                      (f"0,0,{w // 2},0,{w // 2},{h},0,{h}",))):
        times = []
        for _ in range(3):
            times += track([{**r, "objects": [dict(o) for o in r["objects"]]} for r in dets], fps, lines, zones)[20:]
        s = LatencyStats.from_ns(times)
        out[name] = {"p50_ms": round(s.p50_ms, 4), "p90_ms": round(s.p90_ms, 4), "n": s.n}
        print(f"update {name:<16} p50 {s.p50_ms:.3f} ms p90 {s.p90_ms:.3f} ms", flush=True)
    return out


def real_run(video_dir: Path, truth, detector: str, threads: int) -> dict[str, Any]:
    """The real loop (run_camera --track) with a detector on the video; its records scored, and the detector's
    recall (truth boxes matched by any detection at IoU 0.5) to read them by."""
    import numpy as np

    from edgekit.camera.accuracy import read_jsonl
    from edgekit.camera.loop import CameraConfig, run_camera
    from edgekit.camera.track_eval import iou_distances, track_quality

    with tempfile.TemporaryDirectory(prefix="tracking_quality_") as tmp:
        jsonl = Path(tmp) / "r.jsonl"
        rep = run_camera(CameraConfig(input=str(video_dir / "digits.mp4"), output=[str(jsonl)], detector=detector,
                                      track=True, headless=True, threads=threads))
        rows = read_jsonl(str(jsonl), "results")
    found = total = 0
    for r, t in zip(rows, truth):
        d = iou_distances([o["box"] for o in t["objects"]], [o["box"] for o in r["objects"]])
        total += len(t["objects"])
        found += int((~np.isnan(d)).any(axis=1).sum()) if d.size else 0
    q = pick(track_quality(rows, truth))
    print(f"real detector: recall {found / max(1, total):.3f}; kept one id {q['kept_one_id_fraction']:.3f}, "
          f"switches {q['id_switches']}, MOTA {q['mota']:.3f}, IDF1 {q['idf1']:.3f}", flush=True)
    return {"detector": detector, "frames": rep["frames"], "fps": rep["fps"],
            "track_stage_ms": rep["stages_ms"].get("track"), "detector_recall_iou50": round(found / max(1, total), 4),
            **q}


def main(args: argparse.Namespace) -> int:
    from edgekit.errors import EdgekitError
    from edgekit.platform import machine_summary

    try:
        video_dir = ensure_video(Path(args.video_dir))
        truth = [json.loads(line) for line in (video_dir / "digits.jsonl").read_text().splitlines()]
        meta = json.loads((video_dir.parent / "edgekit.json").read_text()).get("video", {}) \
            if (video_dir.parent / "edgekit.json").exists() else {}
        size, fps = tuple(meta.get("size", (640, 480))), float(meta.get("fps", 25.0))
        load_before = os.getloadavg()
        sim = simulated(truth, size, fps, args.seeds)
        times = timing(truth, size, fps)
        real = real_run(video_dir, truth, args.detector, args.threads) if args.detector else None
    except EdgekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lo = sim[FLOOR["setting"]]["min"]
    met = all(lo[k] >= FLOOR[k] for k in ("kept_one_id_fraction", "mota", "idf1"))
    from importlib.metadata import version

    report = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        "what": "edgekit camera --track (ByteTrack, Roboflow trackers) on the digits-detect test video, scored "
                "against its per-frame ground truth by edgekit.camera.track_eval (py-motmetrics)",
        "video": {"dir": str(video_dir), "frames": len(truth), "size": list(size), "fps": fps,
                  "digits": len({o["id"] for r in truth for o in r["objects"]})},
        "definitions": {"kept_one_id": "one track id over the frames the digit was matched in (IoU >= 0.5), an id no "
                                       "other digit had, and matched in at least half of its frames",
                        "simulated": "edgekit.camera.track_eval.simulated_detections(jitter, miss, false_per_frame)"},
        "floor": FLOOR, "floor_met": met, "simulated": sim, "update_ms": times, "real_detector": real,
        "versions": {p: version(p) for p in ("trackers", "supervision", "motmetrics", "numpy", "scipy")},
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine_summary(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"floor ({FLOOR['setting']}: kept >= {FLOOR['kept_one_id_fraction']}, MOTA >= {FLOOR['mota']}, "
          f"IDF1 >= {FLOOR['idf1']}) {'met' if met else 'NOT met'} -> {args.out}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
