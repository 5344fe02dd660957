#!/usr/bin/env python3
"""Camera loop overhead: end-to-end frame time minus the two models' own inference time, per frame.

    python benchmarks/camera_overhead.py        # writes benchmarks/results/camera_overhead.json

The real loop (edgekit.camera.loop.run_camera, headless, a video file read in order) with a YOLO detector
and a classifier run on each detection, both on ONNX Runtime (CPU, --threads each). Per frame the loop
reports (its `on_frame` hook) the end-to-end frame time (decode excluded, reported apart as `capture`) and
each model's inference time as its runner measured it (around session.run only); overhead = frame -
inference: pre/post-processing, cropping, runner bookkeeping, sinks (and drawing, where an output needs it
in the loop). Variants, interleaved in rounds on the same video: `bare` (no outputs: no drawing, no
writing), `jsonl` (results file), `video` (mp4 + jsonl, no overlays), `video+draw` (mp4 + jsonl with
overlays, drawn on the video writer's thread: the usual run), `bare+track` (no outputs, --track: ByteTrack
ids), `bare+track+lines` (--track with a line across the middle and a zone over the left half: their counts
too), `http+viewer` (the http:// live view with one viewer reading its MJPEG stream from another process, as a
browser would; connected before the first frame is timed). The first --warmup frames of every run are dropped.
The floor (issues #6, #14): overhead <= 2 ms median at 640x480, bare, with --track and with the live view watched.

The same overhead in CPU time (`overhead_cpu`): what the loop's threads spent on the frame outside the models'
calls (time.thread_time_ns). With the stages overlapped (the default) on a CPU with fewer free cores than busy
stages, a stage's wall time also holds the turns other stages took on its core, so the wall-clock sum counts
that work twice; its CPU time does not, and it leaves out the time other processes took. Without overlap on a
quiet machine the two agree. Each is also split into a part per frame and a part per object (per_object).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tempfile
from pathlib import Path
from typing import Any

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # before numpy is imported

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FLOOR_MS = 2.0
NON_INFER = ("preprocess", "postprocess", "classify_pre", "track", "draw", "write", "untimed", "detect_minus_infer",
             "classify_minus_infer")  # frame_rows' parts of a frame that are not the models' inference
VARIANTS = ("bare", "jsonl", "video", "video+draw", "bare+track", "bare+track+lines", "http+viewer")
DEFAULTS = {  # what `make demo` leaves: its test video and its two models
    "video": "runs/demo/data/digits-detect/video/digits.mp4",
    "detector": "runs/demo/models/digit_detector",
    "classifier": "runs/demo/models/digit_classifier",
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", default=DEFAULTS["video"], help="input video (default: %(default)s)")
    p.add_argument("--detector", default=DEFAULTS["detector"], help="YOLO model directory (default: %(default)s)")
    p.add_argument("--classifier", default=DEFAULTS["classifier"],
                   help="classifier model directory, '' for none (default: %(default)s)")
    p.add_argument("--backend", default="onnxrt", help="backend of both models (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per runner (default: %(default)s)")
    p.add_argument("--cv-threads", type=int, default=1, help="cv2.setNumThreads (default: %(default)s; the loop "
                   "itself runs OpenCV at 1 thread while it runs)")
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=True,
                   help="the loop's stages on their own threads (default) or one after another (--no-overlap)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds, one run per variant each")
    p.add_argument("--warmup", type=int, default=10, help="frames dropped at the start of every run")
    p.add_argument("--max-frames", type=int, default=0, help="frames per run; 0 = the whole video")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "camera_overhead.json"))
    p.add_argument("--viewer-child", type=int, default=0, help=argparse.SUPPRESS)  # internal: the viewer's port
    return p


# ---- the arithmetic (pure: tested on crafted records) ---------------------------------------------------------

def frame_rows(records: list[dict[str, Any]], warmup: int) -> list[dict[str, Any]]:
    """Per-frame rows after warm-up: frame, inference and overhead (ns), and stage times where the frame had
    the stage. detect/classify stages also give their non-inference part (runner bookkeeping around the
    models' own time)."""
    rows = []
    from edgekit.camera.loop import NOT_STAGES  # the loop's own totals and waits; capture stays, reported apart

    for r in records[warmup:]:
        infer = r["det_infer_ns"] + r["cls_infer_ns"]
        st = {k: v for k, v in r["stages_ns"].items() if k == "capture" or k not in NOT_STAGES}
        timed = sum(v for k, v in st.items() if k != "capture")  # capture (decode) is not part of frame_ns
        st["untimed"] = r["frame_ns"] - timed  # frame time in no stage: glue, softmax/labels, timer spans
        if "detect" in st:
            st["detect_minus_infer"] = st["detect"] - r["det_infer_ns"]
        if "classify" in st:
            st["classify_minus_infer"] = st["classify"] - r["cls_infer_ns"]
        row = {"frame": r["frame"], "objects": r["objects"], "frame_ns": r["frame_ns"],
               "det_infer_ns": r["det_infer_ns"], "cls_infer_ns": r["cls_infer_ns"], "infer_ns": infer,
               "overhead_ns": r["frame_ns"] - infer, "stages_ns": st}
        if "frame_cpu_ns" in r:  # the loop's threads' CPU time outside the models' calls
            row["overhead_cpu_ns"] = r["frame_cpu_ns"] - r["infer_cpu_ns"]
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median / p90 (ms) of frame, inference, overhead, and the median of every stage over the frames that
    had it."""
    from edgekit.profile.timer import LatencyStats

    def stat(values) -> dict[str, float]:
        s = LatencyStats.from_ns(values)
        return {"p50_ms": round(s.p50_ms, 4), "p90_ms": round(s.p90_ms, 4), "mean_ms": round(s.mean_ms, 4), "n": s.n}

    out = {k.removesuffix("_ns") + "_ms": stat([r[k] for r in rows])
           for k in ("frame_ns", "det_infer_ns", "cls_infer_ns", "infer_ns", "overhead_ns", "overhead_cpu_ns")
           if rows and all(k in r for r in rows)}
    stages: dict[str, list[int]] = {}
    for r in rows:
        for k, v in r["stages_ns"].items():
            stages.setdefault(k, []).append(v)
    out["stages_p50_ms"] = {k: stat(v)["p50_ms"] for k, v in stages.items()}
    # the same overhead summed from each part's median: on a shared CPU a time slice lost to another process
    # (~10 ms) lands in a random stage of about half the frames and moves the overhead's own median by whole
    # slices; each part's median sees few of them. A cross-check under load, not the floor's measure.
    out["overhead_from_stage_p50s_ms"] = round(sum(out["stages_p50_ms"].get(k, 0.0) for k in NON_INFER), 4)
    out["stages_n"] = {k: len(v) for k, v in stages.items()}
    out["objects_mean"] = round(sum(r["objects"] for r in rows) / len(rows), 3) if rows else 0.0
    out["per_object"] = per_object_fit(rows)
    if "overhead_cpu_ms" in out:
        out["per_object_cpu"] = per_object_fit(rows, "overhead_cpu_ns")
    return out


def per_object_fit(rows: list[dict[str, Any]], key: str = "overhead_ns") -> dict[str, Any] | None:
    """Overhead as a per-frame part plus a part per object (crops, classifier batch, tracks, records): a
    least-squares line through (objects, overhead) over the frames, and the most objects a frame may have with
    the line under the floor. The median overhead of each object count is given beside it. None when every
    frame had the same count (no slope to fit)."""
    import numpy as np

    n = np.asarray([r["objects"] for r in rows], np.float64)
    ms = np.asarray([r[key] for r in rows], np.float64) / 1e6
    if len(set(n.tolist())) < 2:
        return None
    slope, fixed = np.polyfit(n, ms, 1)
    by_count = {int(k): round(float(np.median(ms[n == k])), 4) for k in sorted(set(n.tolist())) if (n == k).sum() >= 5}
    return {"fixed_ms": round(float(fixed), 4), "per_object_ms": round(float(slope), 4),
            "objects_within_floor": int((FLOOR_MS - fixed) / slope + 1e-6) if slope > 0 and fixed <= FLOOR_MS else None,
            "overhead_p50_by_objects_ms": by_count}


# ---- running the loop -------------------------------------------------------------------------------------------

def run_variant(variant: str, args: argparse.Namespace, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from edgekit.camera.loop import CameraConfig, run_camera

    port = free_port()
    outputs = {"bare": [], "jsonl": ["r.jsonl"], "video": ["o.mp4", "r.jsonl"], "video+draw": ["o.mp4", "r.jsonl"],
               "bare+track": [], "bare+track+lines": [], "http+viewer": [f"http://127.0.0.1:{port}"]}
    if variant not in outputs:
        from edgekit.errors import unknown_choice

        raise unknown_choice("variant", variant, outputs)
    viewer = Viewer(port) if variant == "http+viewer" else None
    records: list[dict[str, Any]] = []

    def on_frame(rec: dict[str, Any]) -> None:
        if viewer is not None and not records:
            viewer.wait_connected()  # frame 0 (warm-up): the viewer is watching before any frame is timed
        records.append({**rec, "stages_ns": dict(rec["stages_ns"])})

    outs = [o if o.startswith("http://") else str(work / o) for o in outputs[variant]]
    cfg = CameraConfig(input=args.video, output=outs, detector=args.detector, classifier=args.classifier,
                       det_backend=args.backend, cls_backend=args.backend, headless=True, threads=args.threads,
                       max_frames=args.max_frames, draw=variant != "video", overlap=args.overlap,
                       **tracking_options(variant, args.video))
    try:
        report = run_camera(cfg, on_frame=on_frame)
    finally:
        report_viewer = viewer.finish() if viewer is not None else None
    jsonl = work / "r.jsonl"
    report["results_sha256"] = results_digest(jsonl) if jsonl.exists() else None
    report["viewer"] = report_viewer
    for o in outputs[variant]:
        if not o.startswith("http://"):
            (work / o).unlink(missing_ok=True)
    return records, report


def tracking_options(variant: str, video: str) -> dict[str, Any]:
    """--track for the +track variants; +lines adds a line across the middle and a zone over the left half."""
    if "+track" not in variant:
        return {}
    if not variant.endswith("+lines"):
        return {"track": True}
    import cv2

    cap = cv2.VideoCapture(video)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) or 640, int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) or 480
    cap.release()
    return {"track": True, "line": [f"0,{h // 2},{w},{h // 2}"], "zone": [f"0,0,{w // 2},0,{w // 2},{h},0,{h}"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Viewer:
    """One viewer of the live view in another process (as a browser is): reads /stream until the server closes."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--viewer-child", str(port)], stdout=subprocess.PIPE,
                                     text=True)
        self.connected, self.summary = threading.Event(), {}
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        for line in self.proc.stdout:
            if line.strip() == "connected":
                self.connected.set()
            elif line.strip():
                self.summary = json.loads(line)
                self.connected.set()

    def wait_connected(self) -> None:
        if not self.connected.wait(120):
            raise RuntimeError("the viewer never connected to the live view")

    def finish(self) -> dict[str, Any]:
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(0.1)  # the listener reads the summary line
        return self.summary


def viewer_child(port: int) -> int:
    """Connect to http://127.0.0.1:PORT/stream (retrying until it listens), say "connected", count the JPEG parts
    until the server closes, print {"parts": n}."""
    import http.client

    deadline = time.monotonic() + 120
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/stream")
            resp = conn.getresponse()
            break
        except OSError:
            if time.monotonic() > deadline:
                print(json.dumps({"error": "the live view never listened"}), flush=True)
                return 1
            time.sleep(0.05)
    print("connected" if resp.status == 200 else json.dumps({"error": f"HTTP {resp.status}"}), flush=True)
    parts = 0
    try:
        while line := resp.fp.readline():
            if line.lower().startswith(b"content-length:"):
                n = int(line.split(b":")[1])
                resp.fp.readline()
                if len(resp.fp.read(n)) != n:
                    break
                parts += 1
    except OSError:
        pass
    print(json.dumps({"parts": parts}), flush=True)
    return 0


def results_digest(jsonl: Path) -> str:
    """sha256 of what a run found (each frame's objects), not of when: records carry capture times."""
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    found = [{"frame": r["frame"], "objects": r["objects"]} for r in rows]
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()


def check_inputs(args: argparse.Namespace) -> None:
    from edgekit.errors import EdgekitError

    for what in ("video", "detector", "classifier"):
        path = getattr(args, what)
        if path and not Path(path).exists():
            hint = ("build it with `make demo`" if what == "classifier"
                    else "build it with `python benchmarks/detect_train.py`")
            raise EdgekitError(f"--{what} {path} does not exist: {hint}, or pass another with --{what}")


def main(args: argparse.Namespace) -> int:
    if args.viewer_child:
        return viewer_child(args.viewer_child)
    import cv2

    from edgekit.errors import EdgekitError
    from edgekit.platform import machine_summary

    try:
        check_inputs(args)
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        cv2.setNumThreads(args.cv_threads)
        load_before = os.getloadavg()
        rows: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        with tempfile.TemporaryDirectory(prefix="camera_overhead_") as tmp:
            for rnd in range(args.rounds):
                for v in variants:
                    records, rep = run_variant(v, args, Path(tmp))
                    r = frame_rows(records, args.warmup)
                    rows[v] += r
                    s = summarize(r)
                    runs[v].append({"round": rnd, "frames": rep["frames"], "fps": rep["fps"],
                                    "overhead_p50_ms": s["overhead_ms"]["p50_ms"],
                                    "overhead_cpu_p50_ms": s["overhead_cpu_ms"]["p50_ms"],
                                    "frame_p50_ms": s["frame_ms"]["p50_ms"],
                                    "results_sha256": rep["results_sha256"], "loadavg": os.getloadavg()[0],
                                    "rss_peak_mb": rep["rss"]["peak_mb"], "capture": rep["capture"],
                                    "draw_on_writer_thread_p50_ms": (rep.get("draw_on_writer_thread_ms") or {}).get(
                                        "p50_ms"), "viewer": rep["viewer"]})
                    print(f"round {rnd} {v:<10} {rep['frames']} frames, overhead p50 {s['overhead_ms']['p50_ms']:.3f} "
                          f"ms, frame p50 {s['frame_ms']['p50_ms']:.2f} ms, load {os.getloadavg()[0]:.2f}", flush=True)
    except EdgekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = {v: {**summarize(rows[v]), "runs": runs[v]} for v in variants}
    shas = {r["results_sha256"] for v in variants for r in runs[v] if r["results_sha256"]}
    worst = max(results[v]["overhead_ms"]["p50_ms"] for v in variants)
    worst_cpu = max(results[v]["overhead_cpu_ms"]["p50_ms"] for v in variants)
    report = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        "what": "edgekit camera loop (run_camera, headless, video file in order): per frame, end-to-end frame time "
                "(decode excluded) minus the detector's and classifier's inference as their runners timed it",
        "inputs": {"video": args.video, "detector": args.detector, "classifier": args.classifier,
                   "backend": args.backend, "threads": args.threads, "cv_threads": args.cv_threads,
                   "overlap": args.overlap,
                   "warmup_frames": args.warmup, "rounds": args.rounds},
        "floor": {"overhead_p50_ms": FLOOR_MS}, "worst_variant_overhead_p50_ms": worst, "floor_met": worst <= FLOOR_MS,
        "worst_variant_overhead_cpu_p50_ms": worst_cpu, "floor_met_cpu": worst_cpu <= FLOOR_MS,
        "results_identical_across_runs": len(shas) <= 1, "results_sha256": sorted(shas),
        "results": results,
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine_summary(),
        "note": "shared 2-core CPU (other jobs running): absolute times are inflated and noisy; variants interleaved. "
                "The video variants encode mp4v on a second thread of the same process, on the same two cores: "
                "under load its CPU time shows up as preemption inside the loop's stages (p90, and the median); it "
                "runs at nice +5 (VideoSink.encoder_nice) so the loop wins a shared core. With only a video wanting "
                "frames, the overlays are drawn on that thread onto its copy (runs[].draw_on_writer_thread_p50_ms), "
                "so the loop's part of drawing is the copy in write (mostly cache/TLB misses on a frame gone cold "
                "during inference).",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for v in variants:
        r, fit = results[v], results[v]["per_object"] or {}
        print(f"{v:<10} objects {r['objects_mean']:.1f}/frame; overhead {fit.get('fixed_ms', float('nan')):.3f} ms + "
              f"{fit.get('per_object_ms', float('nan')):.3f} ms per object (floor held up to "
              f"{fit.get('objects_within_floor')} objects)")
        cpu, fit_cpu = r["overhead_cpu_ms"], r["per_object_cpu"] or {}
        print(f"{v:<10} overhead in CPU time p50 {cpu['p50_ms']:.3f} ms p90 {cpu['p90_ms']:.3f} ms: "
              f"{fit_cpu.get('fixed_ms', float('nan')):.3f} ms + {fit_cpu.get('per_object_ms', float('nan')):.3f} ms per "
              f"object (floor held up to {fit_cpu.get('objects_within_floor')} objects)")
        print(f"{v:<10} overhead p50 {r['overhead_ms']['p50_ms']:.3f} ms p90 {r['overhead_ms']['p90_ms']:.3f} ms "
              f"(n={r['overhead_ms']['n']}; from stage p50s {r['overhead_from_stage_p50s_ms']:.3f} ms); frame p50 {r['frame_ms']['p50_ms']:.2f} ms; stages p50 "
              + ", ".join(f"{k} {x:.3f}" for k, x in r["stages_p50_ms"].items()))
    print(f"worst variant overhead p50 {worst:.3f} ms wall, {worst_cpu:.3f} ms CPU (floor {FLOOR_MS} ms) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
